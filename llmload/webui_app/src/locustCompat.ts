// locust-ui 2.43.4 (the newest published) asks for "stop" and "stats/reset" with GET; Locust 2.47
// routes both as POST only. Until the two agree again, send those two requests as POST.
// tests/integration/test_cockpit.py stops a test from the page, which checks the pair.
const POST_ONLY = /\/(stop|stats\/reset)$/;

export function sendPostOnlyRoutesAsPost(): void {
  const fetchAsIs = window.fetch.bind(window);
  window.fetch = (input: RequestInfo | URL, init?: RequestInit) => {
    if (input instanceof Request && input.method === 'GET' && POST_ONLY.test(new URL(input.url).pathname)) {
      return fetchAsIs(new Request(input, { method: 'POST' }));
    }
    return fetchAsIs(input, init);
  };
}
