"""A stand-in for the vLLM venv's Python, so the target's process logic is tested in seconds.

Invoked as that interpreter would be:

* ``-c CODE`` (the import probe): prints ``$FAKE_VLLM_VERSION`` (default 0.0.0-fake);
  exits 1 when ``$FAKE_VLLM_BROKEN`` is set;
* ``.../_build_model.py --out DIR --spec JSON``: writes only the completion marker;
* ``-m vllm.entrypoints.openai.api_server ... --port P``: starts a child process
  (like vLLM's engine core, in the same process group), prints ``child pid N``,
  then serves ``GET /health`` on 127.0.0.1:P after ``$FAKE_VLLM_DELAY`` seconds
  until SIGTERM. With ``$FAKE_VLLM_FAIL`` set it prints a vLLM-like traceback
  and exits 1 instead.
"""

import http.server
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def probe() -> int:
    if os.environ.get("FAKE_VLLM_BROKEN"):
        print("RuntimeError: operator torchvision::nms does not exist", file=sys.stderr)
        return 1
    print(os.environ.get("FAKE_VLLM_VERSION", "0.0.0-fake"))
    return 0


def build(argv: list[str]) -> int:
    out = Path(argv[argv.index("--out") + 1])
    spec = json.loads(argv[argv.index("--spec") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text("{}")
    (out / "llmload-model.json").write_text(json.dumps({"spec": spec}))
    print("built", spec["name"])
    return 0


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(argv: list[str]) -> int:
    print(f"(APIServer pid={os.getpid()}) INFO 11-21 15:00:00 [api_server.py:1] fake vLLM {' '.join(argv)}")
    if os.environ.get("FAKE_VLLM_FAIL"):
        print("Traceback (most recent call last):")
        print('  File "/x/core.py", line 1, in <module>')
        print("(EngineCore pid=2) ERROR 11-21 15:00:01 [core.py:9] ValueError: fake failure for the test")
        print("RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}")
        sys.stdout.flush()
        return 1
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"child pid {child.pid}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0.3")))
    if os.environ.get("FAKE_VLLM_EXIT_AFTER"):
        server = http.server.HTTPServer(("127.0.0.1", int(argv[argv.index("--port") + 1])), Health)
        server.timeout = 0.1
        deadline = time.monotonic() + float(os.environ["FAKE_VLLM_EXIT_AFTER"])
        while time.monotonic() < deadline:
            server.handle_request()
        print("ValueError: fake crash while serving", flush=True)
        return 3
    server = http.server.HTTPServer(("127.0.0.1", int(argv[argv.index("--port") + 1])), Health)
    server.serve_forever()
    return 0


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["-c"]:
        return probe()
    if argv and argv[0].endswith("_build_model.py"):
        return build(argv)
    if argv[:2] == ["-m", "vllm.entrypoints.openai.api_server"]:
        return serve(argv[2:])
    print(f"fake_vllm: unexpected arguments {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
