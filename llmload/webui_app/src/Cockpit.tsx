import {
  Alert,
  Box,
  Button,
  Checkbox,
  FormControlLabel,
  FormGroup,
  Link,
  Paper,
  Stack,
  Table,
  TableBody,
  TableCell,
  TableHead,
  TableRow,
  TextField,
  Typography,
} from '@mui/material';
import * as echarts from 'echarts';
import { IRootState } from 'locust-ui';
import { useEffect, useMemo, useRef, useState } from 'react';
import { useSelector } from 'react-redux';

// The master's routes (llmload/webui.py), relative to the page so that --web-base-path works.
const CHARTS_URL = './llmload/charts';
const STATE_URL = './llmload/state';
const STEER_URL = './llmload/steer';
const RESULTS_URL = './llmload/results.json';
const REPORT_URL = './llmload/report.html';
const MAX_POINTS = 360; // as many as the master keeps per group (llmload/chart_history.py)

type Point = (number | null)[];
interface GroupSeries {
  backend: string;
  model: string;
  user_class: string;
  points: Point[];
  errors: [number, Record<string, number>][];
}
interface ChartsResponse {
  fields: string[];
  groups: GroupSeries[];
  load: [number, Record<string, { users: number; in_flight: number }>][];
  interval_s: number;
  slo: { ttft_s: number | null; stream_rate_tps: number | null };
}
interface RunState {
  state: string | null;
  users: number;
  workers: { connected: number; missing: string[] };
  slo: { ttft_s: number | null; stream_rate_tps: number | null; objective: number };
  think_time_s: [number, number] | null;
  arrival: string;
  rate_rps: number | null;
  dispatch_lag_p99_s: number | null;
  capacity: null | {
    phase: string;
    level: number | null;
    steps: Record<string, number | string | boolean | null>[];
    answer: Record<string, unknown>;
  };
  generator: null | {
    trustworthy: boolean;
    by_process: Record<string, { trustworthy: boolean; loop_lag_p99_s: number | null }>;
    limits: Record<string, number>;
  };
  phases: { name: string; started: number }[];
  verdict?: {
    slo: { attainment: number | null; objective: number | null; met: boolean | null };
    capacity: Record<string, unknown> | null;
    soak: string | null;
    trustworthy: boolean | null;
    reasons: string[];
  };
}

interface ChartSpec {
  id: string;
  title: string;
  unit: string;
  lines: { field: string; label: string; dashed?: boolean }[];
  slo?: 'ttft_s' | 'stream_rate_tps';
  scale?: number;
}

const CHARTS: ChartSpec[] = [
  { id: 'ttft', title: 'TTFT p50 / p99', unit: 'ms', scale: 1000, slo: 'ttft_s', lines: [
    { field: 'ttft_p50_s', label: 'p50' }, { field: 'ttft_p99_s', label: 'p99', dashed: true }] },
  { id: 'itl', title: 'Inter-token latency p50 / p99', unit: 'ms', scale: 1000, lines: [
    { field: 'itl_p50_s', label: 'p50' }, { field: 'itl_p99_s', label: 'p99', dashed: true }] },
  { id: 'tokens', title: 'Output tokens per second (as they arrive)', unit: 'tok/s', lines: [
    { field: 'output_tokens_per_s', label: '' }] },
  { id: 'stream-rate', title: 'Stream rate p50 / p10 (against the SLO)', unit: 'tok/s', slo: 'stream_rate_tps', lines: [
    { field: 'stream_rate_p50_tps', label: 'p50' }, { field: 'stream_rate_p10_tps', label: 'p10', dashed: true }] },
  { id: 'slo', title: 'SLO attainment', unit: '%', scale: 100, lines: [{ field: 'slo_attainment', label: '' }] },
];

const groupName = (g: GroupSeries, several: boolean) => (several ? `${g.backend} · ${g.user_class}` : g.backend);
const fmt = (value: number | null | undefined, digits = 1) => (value == null ? '-' : value.toFixed(digits));

function mergeGroups(old: GroupSeries[], fresh: GroupSeries[]): GroupSeries[] {
  const byKey = new Map(old.map(g => [`${g.backend}|${g.model}|${g.user_class}`, g]));
  for (const g of fresh) {
    const key = `${g.backend}|${g.model}|${g.user_class}`;
    const mine = byKey.get(key);
    byKey.set(
      key,
      mine
        ? { ...mine, points: [...mine.points, ...g.points].slice(-MAX_POINTS), errors: [...mine.errors, ...g.errors].slice(-MAX_POINTS) }
        : g,
    );
  }
  return [...byKey.values()].sort((a, b) => `${a.backend}|${a.user_class}`.localeCompare(`${b.backend}|${b.user_class}`));
}

function EChart({ id, option }: { id: string; option: echarts.EChartsOption }) {
  const element = useRef<HTMLDivElement>(null);
  const chart = useRef<echarts.ECharts | null>(null);
  useEffect(() => {
    if (!element.current) return;
    chart.current = echarts.init(element.current);
    const resize = () => chart.current?.resize();
    window.addEventListener('resize', resize);
    return () => {
      window.removeEventListener('resize', resize);
      chart.current?.dispose();
    };
  }, []);
  useEffect(() => {
    chart.current?.setOption(option, { notMerge: true });
  }, [option]);
  // What the chart draws, in the page (the canvas is opaque): series name -> [points, last [time, value]].
  const drawn = Object.fromEntries(
    ((option.series || []) as { name?: string; data?: unknown[] }[]).map(s => [
      s.name ?? '',
      [s.data?.length ?? 0, s.data?.length ? s.data[s.data.length - 1] : null],
    ]),
  );
  return <div data-chart={id} data-series={JSON.stringify(drawn)} ref={element} style={{ width: '100%', height: 260 }} />;
}

// A dashed vertical line where each steering change started a new phase (the run events of the soak issue).
function phaseMarks(changes: { name: string; started: number }[]): echarts.LineSeriesOption {
  return {
    type: 'line',
    name: 'changes',
    data: [],
    markLine: {
      symbol: 'none',
      silent: true,
      lineStyle: { color: '#7b1fa2', type: 'dotted' },
      label: { formatter: '{b}', position: 'insideEndTop', fontSize: 10 },
      data: changes.map(change => ({ name: change.name, xAxis: change.started * 1000 })),
    },
  };
}

function chartOption(
  spec: ChartSpec,
  groups: GroupSeries[],
  fields: string[],
  slo: ChartsResponse['slo'] | null,
  changes: { name: string; started: number }[],
) {
  const several = new Set(groups.map(g => g.user_class)).size > 1;
  const scale = spec.scale ?? 1;
  const series: echarts.SeriesOption[] = [];
  for (const g of groups) {
    for (const line of spec.lines) {
      const index = fields.indexOf(line.field);
      series.push({
        type: 'line',
        name: [groupName(g, several), line.label].filter(Boolean).join(' '),
        showSymbol: false,
        lineStyle: line.dashed ? { type: 'dashed' } : undefined,
        data: g.points.map(p => [(p[0] as number) * 1000, p[index] == null ? null : (p[index] as number) * scale]),
      });
    }
  }
  const threshold = spec.slo && slo ? slo[spec.slo] : null;
  if (threshold != null && series.length) {
    (series[0] as echarts.LineSeriesOption).markLine = {
      symbol: 'none',
      silent: true,
      lineStyle: { color: '#d32f2f', type: 'dashed' },
      label: { formatter: 'SLO' },
      data: [{ yAxis: threshold * scale }],
    };
  }
  if (changes.length) series.push(phaseMarks(changes));
  return {
    title: { text: spec.title, textStyle: { fontSize: 14 } },
    tooltip: { trigger: 'axis' },
    legend: { bottom: 0, type: 'scroll' },
    grid: { left: 60, right: 20, top: 40, bottom: 50 },
    xAxis: { type: 'time' },
    yAxis: { type: 'value', name: spec.unit, min: 0 },
    animation: false,
    series,
  } as echarts.EChartsOption;
}

function loadOption(load: ChartsResponse['load'], backends: Set<string>) {
  const names = [...new Set(load.flatMap(([, byBackend]) => Object.keys(byBackend)))].filter(b => backends.has(b));
  const series: echarts.SeriesOption[] = names.flatMap(name => [
    { type: 'line', name: `${name} users`, showSymbol: false, data: load.map(([t, by]) => [t * 1000, by[name]?.users ?? null]) },
    { type: 'line', name: `${name} in flight`, showSymbol: false, lineStyle: { type: 'dashed' },
      data: load.map(([t, by]) => [t * 1000, by[name]?.in_flight ?? null]) },
  ]);
  return {
    title: { text: 'Users and requests in flight', textStyle: { fontSize: 14 } },
    tooltip: { trigger: 'axis' },
    legend: { bottom: 0, type: 'scroll' },
    grid: { left: 60, right: 20, top: 40, bottom: 50 },
    xAxis: { type: 'time' },
    yAxis: { type: 'value', min: 0 },
    animation: false,
    series,
  } as echarts.EChartsOption;
}

// Failed requests per interval by error class, summed over the backends shown.
function errorsOption(groups: GroupSeries[]) {
  const byKind: Record<string, Map<number, number>> = {};
  for (const g of groups) {
    for (const [t, kinds] of g.errors) {
      for (const [kind, n] of Object.entries(kinds)) {
        const series = (byKind[kind] ||= new Map());
        series.set(t, (series.get(t) || 0) + n);
      }
    }
  }
  const times = [...new Set(groups.flatMap(g => g.points.map(p => p[0] as number)))].sort((a, b) => a - b);
  const series: echarts.SeriesOption[] = Object.keys(byKind).sort().map(kind => ({
    type: 'bar',
    stack: 'errors',
    name: kind,
    data: times.map(t => [t * 1000, byKind[kind].get(t) || 0]),
  }));
  return {
    title: { text: 'Failed requests per interval, by error class', textStyle: { fontSize: 14 } },
    tooltip: { trigger: 'axis' },
    legend: { bottom: 0, type: 'scroll' },
    grid: { left: 60, right: 20, top: 40, bottom: 50 },
    xAxis: { type: 'time' },
    yAxis: { type: 'value', name: 'requests', min: 0, minInterval: 1 },
    animation: false,
    series,
  } as echarts.EChartsOption;
}

function errorKinds(groups: GroupSeries[]): [string, number][] {
  const totals: Record<string, number> = {};
  for (const g of groups) for (const [, kinds] of g.errors) for (const [k, n] of Object.entries(kinds)) totals[k] = (totals[k] || 0) + n;
  return Object.entries(totals).sort();
}

function RunStatePanel({ state }: { state: RunState }) {
  const generator = state.generator;
  return (
    <Paper data-panel='run-state' sx={{ p: 2 }}>
      <Typography variant='h6'>Run state</Typography>
      <Typography>
        {state.state ?? '-'} · {state.users} users · workers {state.workers.connected}
        {state.workers.missing.length ? ` (missing: ${state.workers.missing.join(', ')})` : ''}
        {state.arrival !== 'closed' ? ` · open loop ${fmt(state.rate_rps, 2)} rps, dispatch lag p99 ${fmt((state.dispatch_lag_p99_s ?? 0) * 1000)} ms` : ''}
      </Typography>
      <Typography>
        SLO: TTFT ≤ {state.slo.ttft_s ?? '-'} s, stream rate ≥ {state.slo.stream_rate_tps ?? '-'} tok/s, objective{' '}
        {(state.slo.objective * 100).toFixed(1)}%{state.think_time_s ? ` · think time ${state.think_time_s.join('-')} s` : ''}
      </Typography>
      {generator && (
        <Alert data-generator={generator.trustworthy ? 'trustworthy' : 'not-trustworthy'} severity={generator.trustworthy ? 'success' : 'warning'} sx={{ mt: 1 }}>
          Load generator {generator.trustworthy ? 'trustworthy' : 'NOT trustworthy'}:{' '}
          {Object.entries(generator.by_process)
            .map(([name, p]) => `${name} ${p.trustworthy ? 'ok' : 'failing'} (loop lag p99 ${fmt((p.loop_lag_p99_s ?? 0) * 1000)} ms, limit ${fmt(generator.limits.loop_lag_p99_s * 1000)} ms)`)
            .join('; ')}
        </Alert>
      )}
      {state.capacity && (
        <Box data-panel='capacity' sx={{ mt: 1 }}>
          <Typography variant='subtitle1'>Capacity search: {state.capacity.phase}, testing {state.capacity.level ?? 'done'}</Typography>
          <Typography>Answer so far: {JSON.stringify(state.capacity.answer)}</Typography>
          <Table size='small'>
            <TableHead><TableRow><TableCell>step</TableCell><TableCell>level</TableCell><TableCell>passed</TableCell></TableRow></TableHead>
            <TableBody>
              {state.capacity.steps.map((step, i) => (
                <TableRow key={i}><TableCell>{i + 1}</TableCell><TableCell>{String(step.level)}</TableCell><TableCell>{String(step.passed)}</TableCell></TableRow>
              ))}
            </TableBody>
          </Table>
        </Box>
      )}
      <Typography data-panel='phases' sx={{ mt: 1 }}>Phases: {state.phases.map(p => p.name).join(' → ') || '-'}</Typography>
    </Paper>
  );
}

function SteeringPanel({ state, onDone }: { state: RunState; onDone: () => void }) {
  const [rate, setRate] = useState('');
  const [ttft, setTtft] = useState('');
  const [streamRate, setStreamRate] = useState('');
  const [think, setThink] = useState('');
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  const running = state.state === 'running' || state.state === 'spawning';
  const refused = state.capacity ? 'A capacity search is running: it sets the users and the rate itself.' : null;

  const submit = async () => {
    const body: Record<string, unknown> = {};
    if (rate) body.rate_rps = Number(rate);
    if (ttft) body.slo_ttft_s = Number(ttft);
    if (streamRate) body.slo_stream_rate_tps = Number(streamRate);
    if (think) body.think_time_s = think.includes('-') ? think.split('-').map(Number) : Number(think);
    const response = await fetch(STEER_URL, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const answer = await response.json();
    setMessage(response.ok ? { ok: true, text: `Now in phase "${answer.phase}" (closed "${answer.closed}")` } : { ok: false, text: answer.error });
    if (response.ok) {
      for (const clear of [setRate, setTtft, setStreamRate, setThink]) clear('');
    }
    onDone();
  };
  return (
    <Paper data-panel='steering' sx={{ p: 2 }}>
      <Typography variant='h6'>Steer the running test</Typography>
      <Stack direction='row' spacing={1} sx={{ my: 1, flexWrap: 'wrap' }}>
        {state.arrival !== 'closed' && (
          <TextField size='small' label='Rate (requests/s)' name='rate_rps' value={rate} onChange={e => setRate(e.target.value)} />
        )}
        <TextField size='small' label='SLO TTFT (s)' name='slo_ttft_s' value={ttft} onChange={e => setTtft(e.target.value)} />
        <TextField size='small' label='SLO stream rate (tok/s)' name='slo_stream_rate_tps' value={streamRate} onChange={e => setStreamRate(e.target.value)} />
        {state.arrival === 'closed' && (
          <TextField size='small' label='Think time (s or a-b)' name='think_time_s' value={think} onChange={e => setThink(e.target.value)} />
        )}
        <Button variant='contained' name='steer' disabled={!running || !!refused} onClick={submit}>Apply</Button>
      </Stack>
      {refused && <Alert severity='info'>{refused}</Alert>}
      {message && <Alert data-steer-result={message.ok ? 'ok' : 'error'} severity={message.ok ? 'success' : 'error'}>{message.text}</Alert>}
    </Paper>
  );
}

function VerdictPanel({ verdict }: { verdict: NonNullable<RunState['verdict']> }) {
  const slo = verdict.slo;
  return (
    <Paper data-panel='verdict' sx={{ p: 2 }}>
      <Typography variant='h6'>Verdict</Typography>
      <Alert severity={slo.met ? 'success' : 'error'}>
        SLO {slo.met ? 'met' : 'not met'}: attainment {slo.attainment == null ? '-' : (slo.attainment * 100).toFixed(2)}% against an objective of{' '}
        {slo.objective == null ? '-' : (slo.objective * 100).toFixed(1)}%
      </Alert>
      {verdict.capacity && <Typography>Capacity: {String(verdict.capacity.text ?? JSON.stringify(verdict.capacity))}</Typography>}
      {verdict.soak && <Typography>Soak verdict: {verdict.soak}</Typography>}
      {verdict.trustworthy === false && <Alert severity='warning'>Load generator not trustworthy: {verdict.reasons.join('; ')}</Alert>}
      <Stack direction='row' spacing={2} sx={{ mt: 1 }}>
        <Link href={RESULTS_URL} data-download='results'>Download the results JSON</Link>
        <Link href={REPORT_URL} data-download='report'>Download the HTML report</Link>
      </Stack>
    </Paper>
  );
}

export default function Cockpit() {
  // Locust's own stats poll (every 2 s while a test runs) updates ui.stats: the cockpit refreshes with it.
  const statsTick = useSelector(({ ui }: IRootState) => ui.stats);
  const swarmState = useSelector(({ swarm }: IRootState) => swarm.state);
  const [groups, setGroups] = useState<GroupSeries[]>([]);
  const [load, setLoad] = useState<ChartsResponse['load']>([]);
  const [meta, setMeta] = useState<Pick<ChartsResponse, 'fields' | 'slo' | 'interval_s'> | null>(null);
  const [state, setState] = useState<RunState | null>(null);
  const [hidden, setHidden] = useState<Set<string>>(new Set());
  const since = useRef(0);

  const refresh = async () => {
    const charts: ChartsResponse = await (await fetch(`${CHARTS_URL}?since=${since.current}`)).json();
    if (charts.groups) {
      const newest = Math.max(since.current, ...charts.groups.flatMap(g => g.points.map(p => p[0] as number)));
      if (newest < since.current) {
        setGroups(charts.groups);
      } else {
        setGroups(old => mergeGroups(old, charts.groups));
      }
      const fresh = charts.load.filter(([t]) => t > since.current); // before since moves on
      setLoad(old => [...old, ...fresh].slice(-MAX_POINTS));
      since.current = newest;
      setMeta({ fields: charts.fields, slo: charts.slo, interval_s: charts.interval_s });
    }
    setState(await (await fetch(STATE_URL)).json());
  };

  useEffect(() => {
    refresh().catch(() => undefined);
  }, [statsTick, swarmState]);

  // Locust stops polling its stats when a test stops: ask again until the master has the verdict.
  const stopped = (s: string | null | undefined) => s === 'stopped' || s === 'stopping';
  useEffect(() => {
    if (!(stopped(swarmState) || stopped(state?.state)) || state?.verdict) return;
    const timer = setTimeout(() => refresh().catch(() => undefined), 1500);
    return () => clearTimeout(timer);
  }, [swarmState, state]);

  const backends = useMemo(() => [...new Set(groups.map(g => g.backend))], [groups]);
  const shown = groups.filter(g => !hidden.has(g.backend));
  const changes = (state?.phases || []).slice(1); // the first phase starts with the test, not with a change
  const changesKey = changes.map(c => c.started).join();
  const options = useMemo(
    () => (meta ? CHARTS.map(spec => chartOption(spec, shown, meta.fields, meta.slo, changes)) : []),
    [groups, hidden, meta, changesKey],
  );
  const loadChart = useMemo(() => loadOption(load, new Set(shown.map(g => g.backend))), [load, groups, hidden]);
  const errorsChart = useMemo(() => errorsOption(shown), [groups, hidden]);
  const kinds = errorKinds(shown);

  return (
    <Box data-tab='llm-cockpit' sx={{ display: 'flex', flexDirection: 'column', gap: 2, py: 2 }}>
      {state?.verdict && <VerdictPanel verdict={state.verdict} />}
      {state && <RunStatePanel state={state} />}
      {state && !state.verdict && <SteeringPanel state={state} onDone={() => refresh().catch(() => undefined)} />}
      <Paper sx={{ p: 2 }}>
        <Typography variant='h6'>
          Live charts · one point per {meta ? meta.interval_s : 10} s interval, the exporter's live percentiles
        </Typography>
        <FormGroup row data-panel='backends'>
          {backends.map(backend => (
            <FormControlLabel
              key={backend}
              label={backend}
              control={
                <Checkbox
                  checked={!hidden.has(backend)}
                  onChange={() => setHidden(old => {
                    const next = new Set(old);
                    if (next.has(backend)) next.delete(backend); else next.add(backend);
                    return next;
                  })}
                />
              }
            />
          ))}
        </FormGroup>
        {!groups.length && <Typography>Charts appear after the first {meta ? meta.interval_s : 10} s of a running test.</Typography>}
        <Box sx={{ display: 'grid', gridTemplateColumns: 'repeat(auto-fill, minmax(480px, 1fr))', gap: 2 }}>
          {options.map((option, i) => <EChart key={CHARTS[i].id} id={CHARTS[i].id} option={option} />)}
          <EChart id='errors' option={errorsChart} />
          <EChart id='load' option={loadChart} />
        </Box>
        {kinds.length > 0 && (
          <Typography data-panel='errors'>Errors by class (charted intervals): {kinds.map(([k, n]) => `${k} ${n}`).join(', ')}</Typography>
        )}
      </Paper>
    </Box>
  );
}
