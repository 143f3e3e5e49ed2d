// BullMQ's adapter (node, bench/node/node_modules from package-lock.json): the same command
// line and JSON line as the Python adapters (bench/peers/_shared.py documents the protocol).
// Single add: Queue.add; bulk: Queue.addBulk (one atomic call per 1,000); concurrent adds:
// Promise.all of 1,000 Queue.add, repeated. Workers: c1 is one node process with
// `new Worker(..., {concurrency: 1})`, best is one with `{concurrency: N}`, p2 is two node
// processes with `{concurrency: N}` each.
import { spawn } from "node:child_process";
import { mkdirSync, openSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

const COUNTER = "bench:counter", FIRST = "bench:first", DONE = "bench:done";
const LATENCIES = "bench:latencies", BATCH = 1000, QUEUE = "bench", CONCURRENT = 1000;
const PROCESSES = 2; // worker processes of the p2 setting
const DRAIN_CAP = Number(process.env.BENCH_DRAIN_CAP ?? "30");
const here = dirname(fileURLToPath(import.meta.url));

const { values: a } = parseArgs({
  options: {
    url: { type: "string" }, workload: { type: "string" }, jobs: { type: "string", default: "20000" },
    concurrency: { type: "string", default: "1" }, setting: { type: "string", default: "c1" },
    rate: { type: "string", default: "1000" }, seconds: { type: "string", default: "10" },
    role: { type: "string", default: "bench" },
  },
});
const jobs = Number(a.jobs), rate = Number(a.rate), seconds = Number(a.seconds);
const concurrency = a.setting === "c1" ? 1 : Number(a.concurrency);
const setting = a.setting === "p2" ? `${PROCESSES} × new Worker({concurrency: ${concurrency}})`
  : `new Worker({concurrency: ${concurrency}})`;

const payload = (i) => ({ user_id: i, email: `user${i}@example.com`, template: "welcome",
  vars: { name: `User ${i}`, plan: "pro" } });
const redis = (extra = {}) => new IORedis(a.url, { maxRetriesPerRequest: null, ...extra });
const now = () => (performance.timeOrigin + performance.now()) / 1000; // µs resolution
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function enqueueSingle(n) {
  const q = new Queue(QUEUE, { connection: redis() });
  for (let i = 0; i < n; i++) await q.add("job", payload(i));
  await q.close();
}

async function enqueueBulk(n) {
  const q = new Queue(QUEUE, { connection: redis() });
  for (let s = 0; s < n; s += BATCH) {
    const batch = [];
    for (let i = s; i < Math.min(n, s + BATCH); i++) batch.push({ name: "job", data: payload(i) });
    await q.addBulk(batch);
  }
  await q.close();
}

async function enqueueConcurrent(n) {
  const q = new Queue(QUEUE, { connection: redis() });
  for (let s = 0; s < n; s += CONCURRENT) {
    const adds = [];
    for (let i = s; i < Math.min(n, s + CONCURRENT); i++) adds.push(q.add("job", payload(i)));
    await Promise.all(adds);
  }
  await q.close();
}

async function runWorker() {
  const total = Number(process.env.BENCH_TOTAL), mode = process.env.BENCH_MODE;
  const r = redis();
  const worker = new Worker(QUEUE, async (job) => {
    if (mode === "latency") {
      const started = now();
      await r.rpush(LATENCIES, String(started - job.data.sent_at));
      return;
    }
    const n = await r.incr(COUNTER);
    if (n === 1) await r.set(FIRST, String(now()));
    if (n === total) await r.rpush(DONE, String(now()));
  }, { connection: redis(), concurrency });
  const stop = async () => { await worker.close(); r.disconnect(); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

function startWorker(total, mode, index = 0) {
  mkdirSync(join(here, "..", "results", "logs"), { recursive: true });
  const suffix = index ? `-${index + 1}` : "";
  const log = openSync(join(here, "..", "results", "logs", `bullmq-${a.workload}-${a.setting}${suffix}.log`), "w");
  return spawn(process.execPath, [fileURLToPath(import.meta.url), "--url", a.url, "--workload",
    a.workload, "--concurrency", a.concurrency, "--setting", a.setting, "--role", "worker"],
  { env: { ...process.env, BENCH_URL: a.url, BENCH_TOTAL: String(total), BENCH_MODE: mode },
    stdio: ["ignore", log, log], detached: true });
}

function stopWorker(proc) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null) return resolve();
    const timer = setTimeout(() => { try { process.kill(-proc.pid, "SIGKILL"); } catch {} }, 10000);
    proc.on("exit", () => { clearTimeout(timer); resolve(); });
    try { process.kill(-proc.pid, "SIGTERM"); } catch { resolve(); }
  });
}

async function drain() {
  await enqueueBulk(jobs);
  const r = redis();
  const launched = now();
  const procs = [];
  for (let i = 0; i < (a.setting === "p2" ? PROCESSES : 1); i++) procs.push(startWorker(jobs, "incr", i));
  let partial = null, first, done, count = jobs;
  try {
    const deadline = Date.now() + 60000;
    while (!(await r.exists(FIRST))) {
      const gone = procs.find((p) => p.exitCode !== null);
      if (gone) throw new Error(`the worker exited with code ${gone.exitCode}`);
      if (Date.now() > deadline) throw new Error("no job started within 60 s");
      await sleep(5);
    }
    first = Number(await r.get(FIRST));
    const got = await r.blpop(DONE, Math.max(0.1, DRAIN_CAP - (now() - first)));
    if (got) done = Number(got[1]);
    else {
      done = now();
      count = Number(await r.get(COUNTER));
      partial = `${count.toLocaleString("en-US")} of ${jobs.toLocaleString("en-US")} jobs in ${DRAIN_CAP} s`;
    }
  } finally {
    await Promise.all(procs.map(stopWorker));
  }
  r.disconnect();
  const result = { ok: true, seconds: done - first, jobs: count - 1, startup: first - launched, setting };
  if (partial) result.partial = partial;
  return result;
}

async function produce(q, secs, offset = 0) {
  const n = Math.round(rate * secs), start = performance.now();
  for (let i = 0; i < n; i++) {
    const wait = start + (i * 1000) / rate - performance.now();
    if (wait > 1) await sleep(wait - 0.5);
    while (performance.now() < start + (i * 1000) / rate) { /* spin the last ms */ }
    await q.add("job", { ...payload(offset + i), sent_at: now() });
  }
  return n;
}

async function latency() {
  const r = redis(), q = new Queue(QUEUE, { connection: redis() });
  const total = Math.round(rate * seconds);
  const proc = startWorker(total, "latency");
  let sent;
  try {
    await produce(q, 20 / rate, total);
    const deadline = Date.now() + 60000;
    while ((await r.llen(LATENCIES)) < 20) {
      if (proc.exitCode !== null || Date.now() > deadline) throw new Error("the worker did not start");
      await sleep(50);
    }
    await r.del(LATENCIES);
    sent = await produce(q, seconds);
    const until = Date.now() + 30000;
    while ((await r.llen(LATENCIES)) < sent && Date.now() < until) await sleep(50);
  } finally {
    await stopWorker(proc);
  }
  const values = (await r.lrange(LATENCIES, 0, -1)).map(Number).sort((x, y) => x - y);
  await q.close(); r.disconnect();
  const pct = (p) => values[Math.min(values.length - 1, Math.max(0, Math.round((p / 100) * values.length) - 1))];
  return { ok: true, jobs: values.length, sent, p50: pct(50), p99: pct(99), max: values.at(-1), setting };
}

async function timed(fn) {
  const start = performance.now();
  await fn(jobs);
  return { ok: true, seconds: (performance.now() - start) / 1000, jobs };
}

async function main() {
  if (a.role === "worker") return runWorker();
  let result;
  try {
    if (a.workload === "enqueue-single") result = await timed(enqueueSingle);
    else if (a.workload === "enqueue-bulk") result = await timed(enqueueBulk);
    else if (a.workload === "enqueue-concurrent") result = await timed(enqueueConcurrent);
    else if (a.workload === "drain") result = await drain();
    else if (a.workload === "latency") result = await latency();
    else result = { ok: false, error: `unknown workload ${a.workload}` };
  } catch (err) {
    result = { ok: false, error: String(err).slice(0, 300) };
  }
  console.log(JSON.stringify(result));
  process.exit(0);
}

main();
