"""Throughput and latency of ``sapiens2 serve`` against calling ``Predictor`` directly, in the same run.

    .venv/bin/python benchmarks/serve.py [--arch sapiens2_tiny] [--tasks pose] [--input-size 512x384]
                                         [--clients 1,4,16] [--requests 4] [--rounds 3] [--device cpu]
                                         [--max-batch 16] [--inference-threads auto]

Writes random-weight official-format checkpoints of ``--arch`` for ``--tasks`` to a temporary folder, then:

1. direct: one ``Predictor`` in this process, ``predict()`` on each decoded image one after another with
   ``--threads`` torch threads (the one-at-a-time baseline) and with every core's thread (what one caller gets
   from the whole machine), and ``predict_many`` in batches of ``--max-batch`` (what batching alone gains);
2. the real service, ``sapiens2 serve`` started as a subprocess on 127.0.0.1 (a random free port), three
   times: its defaults (``--max-batch auto --inference-threads auto``: on a CPU no gathering and 2 inference
   threads on 2+ cores), batching (``--max-batch``) with ``--inference-threads`` (default auto), and batching
   with one inference thread (batches one after another); N concurrent clients (threads with one HTTP
   connection each) each send ``--requests`` uploads of examples/astronaut.jpg and wait for the answers.

The default input size is 512x384: at 256x192 the tiny arch's forward is about 20 ms and bound by Python (a
second torch thread gains nothing, two forwards at once wait for each other's interpreter lock), which no model
people serve is; at 512x384 it is 87 ms, 67 ms with 2 threads.

All three servers run from the start; each of ``--rounds`` rounds measures every setting once, in turn, so that a
change in the machine's load hits them all alike: requests/s is the median over the rounds, and the ratios
against one-at-a-time are medians of ratios measured back to back in the same round.

Reports requests/s, p50/p95 latency, CPU time per request and cores used (CPU seconds per wall second) per
setting (the server process's user + system time from /proc, all threads; direct: this process's), and the most
batches the server had in the model at once (from /health): on a machine shared with other jobs the latencies
mostly measure the others, the CPU time much less so. "service overhead at 1 client" compares the service's
1-client latency with the direct ``predict()`` latency (the service also decodes the upload and writes the
same files ``sapiens2 predict`` writes); the throughput at 16 clients is compared with direct one-at-a-time
(``--threads``; the goal: >= 1.5x) and with one-at-a-time on every core. On a CPU the gain needs the requests to
run on more than one core at once (cores used > 1). Every loop is bounded; only 127.0.0.1 is used.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "examples" / "astronaut.jpg"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def write_checkpoints(folder: Path, tasks: list[str], arch: str, input_size) -> dict[str, Path]:
    import torch
    from safetensors.torch import save_file

    from sapiens2.models.task_model import build_model

    paths = {}
    for i, task in enumerate(tasks):
        torch.manual_seed(i)
        model = build_model(task, arch, img_size=input_size)
        paths[task] = folder / f"{arch}_{task}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths[task]))
    return paths


def direct_predictor(paths: dict[str, Path], args, input_size):
    from sapiens2.inference.predictor import Predictor
    from sapiens2.io import decode_image

    predictor = Predictor(list(paths), model={t: str(p) for t, p in paths.items()}, device=args.device,
                          input_size=input_size, detector="none", batch_size=args.max_batch)
    rgb = decode_image(IMAGE.read_bytes()).rgb
    for _ in range(3):  # warm-up
        predictor.predict(rgb)
    return predictor, rgb


def one_at_a_time(predictor, rgb, total: int) -> tuple[list[float], float, float]:
    """(latencies, wall s, CPU s) of ``total`` predict() calls one after another."""
    latencies = []
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(total):
        start = time.perf_counter()
        predictor.predict(rgb)
        latencies.append(time.perf_counter() - start)
    return latencies, time.perf_counter() - began, time.process_time() - cpu


def batched(predictor, rgb, size: int, total: int) -> tuple[list[float], float, float, int]:
    """(batch latencies, wall s, CPU s, images) of predict_many in batches of ``size``."""
    latencies = []
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(max(1, total // size)):
        start = time.perf_counter()
        list(predictor.predict_many([rgb] * size))
        latencies.append(time.perf_counter() - start)
    return latencies, time.perf_counter() - began, time.process_time() - cpu, len(latencies) * size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(paths: dict[str, Path], args, max_batch: int, inference_threads: str):
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "sapiens2", "serve", "--device", args.device, "--input-size", args.input_size,
               "--detector", "none", "--host", "127.0.0.1", "--port", str(port), "--max-batch", str(max_batch),
               "--batch-wait-ms", str(args.batch_wait_ms), "--max-queue", "256",
               "--inference-threads", inference_threads]
    for task, path in paths.items():
        command += ["--checkpoint", f"{task}={path}"]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server exited:\n{log.read().decode(errors='replace')}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not answer /health within 120 s")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(url: str, clients: int, requests: int, data: bytes) -> tuple[list[float], float, int]:
    import httpx

    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client():
        with httpx.Client(base_url=url, timeout=120) as http:
            barrier.wait()
            for _ in range(requests):
                start = time.perf_counter()
                response = http.post("/v1/predict", content=data, headers={"content-type": "image/jpeg"})
                with lock:
                    latencies.append(time.perf_counter() - start)
                    failures[0] += response.status_code != 200

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return latencies, time.perf_counter() - began, failures[0]


def served_settings(args) -> list[tuple[str, int, str]]:
    """(name, --max-batch, --inference-threads) of the served settings."""
    return [("defaults", "auto", "auto"), ("batching", args.max_batch, args.inference_threads),
            ("batching, 1 thread", args.max_batch, "1")]


class Tally:
    """One setting's measurements over the rounds."""

    def __init__(self, name: str):
        self.name, self.latencies, self.round_rps = name, [], []
        self.requests = self.failed = 0
        self.wall = self.cpu = 0.0
        self.note = ""

    def add(self, latencies: list[float], wall: float, cpu: float, requests: int, failed: int = 0) -> None:
        self.latencies += latencies
        self.requests += requests
        self.wall += wall
        self.cpu += cpu
        self.failed += failed
        self.round_rps.append(requests / wall)

    @property
    def rps(self) -> float:
        return statistics.median(self.round_rps)


def paired_ratio(a: Tally, b: Tally) -> float:
    """Median over the rounds of a's throughput / b's, each pair measured back to back."""
    return statistics.median(x / y for x, y in zip(a.round_rps, b.round_rps))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sapiens2_tiny")
    parser.add_argument("--tasks", default="pose")
    parser.add_argument("--input-size", default="512x384")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=4, help="requests per client per round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each measures every setting once, in turn (medians, ratios paired by round)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--inference-threads", default="auto",
                        help="the server's --inference-threads for the batching setting (default auto)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads, here and in the server (default 1: the HTTP side needs a core too)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the server subprocesses
    import torch

    torch.set_num_threads(args.threads)
    import httpx

    from sapiens2.runtime import usable_cores

    input_size = tuple(int(v) for v in args.input_size.split("x"))
    clients = [int(c) for c in args.clients.split(",")]
    data = IMAGE.read_bytes()
    total = max(16, args.requests * 4)
    one = Tally("direct predict() one at a time")
    cores = usable_cores()
    whole = Tally(f"direct predict() one at a time, {cores} threads")
    many = Tally(f"direct predict_many batch {args.max_batch}")
    served = {(mode, n): Tally(f"serve {mode}, {n} client(s)") for mode, _, _ in served_settings(args) for n in clients}
    servers = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = write_checkpoints(Path(folder), args.tasks.split(","), args.arch, input_size)
        predictor, rgb = direct_predictor(paths, args, input_size)
        try:
            for mode, max_batch, threads in served_settings(args):  # all up at once: idle ones cost nothing
                servers[mode] = start_server(paths, args, max_batch, threads)
                load(servers[mode][1], 1, 3, data)  # warm-up
            for _ in range(args.rounds):  # every setting once per round, so that a change in load hits them all
                latencies, wall, cpu = one_at_a_time(predictor, rgb, total)
                one.add(latencies, wall, cpu, total)
                torch.set_num_threads(cores)
                latencies, wall, cpu = one_at_a_time(predictor, rgb, total)
                whole.add(latencies, wall, cpu, total)
                torch.set_num_threads(args.threads)
                latencies, wall, cpu, images = batched(predictor, rgb, args.max_batch, total)
                many.add(latencies, wall, cpu, images)
                for n in clients:
                    for mode, (process, url) in servers.items():
                        before = process_cpu_s(process.pid)
                        latencies, wall, failed = load(url, n, args.requests, data)
                        served[mode, n].add(latencies, wall, process_cpu_s(process.pid) - before, len(latencies),
                                            failed)
            for mode, (_, url) in servers.items():
                health = httpx.get(url + "/health").json()
                served[mode, max(clients)].note = (
                    f"largest batch {health['largest_batch']}, {health['inference_threads']} inference thread(s), "
                    f"most batches at once {health['most_running_batches']}")
        finally:
            for process, _ in servers.values():
                process.terminate()  # graceful: in-flight requests finish
            for process, _ in servers.values():
                process.wait(60)

    print(f"{args.arch}, tasks {args.tasks}, input {args.input_size}, {args.device}, {args.threads} torch "
          f"thread(s), {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}, image {IMAGE.name}, "
          f"{args.rounds} round(s)")
    print(f"{'setting':44s} {'req':>5s} {'req/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'cpu ms/req':>10s} {'cores':>5s}")
    for t in [one, whole, many, *served.values()]:
        extra = (f"  failed {t.failed}" if t.failed else "") + (f"  ({t.note})" if t.note else "")
        cpu = f"{1000 * t.cpu / t.requests:10.1f}" if t is not many else f"{'':10s}"
        used = f"{t.cpu / t.wall:5.2f}" if t is not many else f"{'':5s}"
        print(f"{t.name:44s} {t.requests:5d} {t.rps:8.2f} {1000 * percentile(t.latencies, 50):8.1f} "
              f"{1000 * percentile(t.latencies, 95):8.1f} {cpu} {used}{extra}")
    one_p50 = percentile(one.latencies, 50)
    one_cpu = one.cpu / one.requests
    for mode in ("defaults", "batching"):
        alone = served.get((mode, 1))
        if alone is not None:
            print(f"service overhead at 1 client, {mode} (p50 latency vs direct predict()): "
                  f"{100 * (percentile(alone.latencies, 50) / one_p50 - 1):+.1f}%; CPU per request (the server "
                  f"process, HTTP included, vs predict() on a decoded image): "
                  f"{100 * (alone.cpu / alone.requests / one_cpu - 1):+.1f}%")
    for mode, batch, threads in served_settings(args):
        busy = served[mode, max(clients)]
        print(f"throughput at {max(clients)} clients, {mode} (--max-batch {batch} --inference-threads {threads}) vs "
              f"direct one-at-a-time: {paired_ratio(busy, one):.2f}x (goal >= 1.50x), vs one at a time with "
              f"{cores} threads: {paired_ratio(busy, whole):.2f}x, vs its own 1-client rate: "
              f"{paired_ratio(busy, served[mode, min(clients)]):.2f}x; {busy.cpu / busy.wall:.2f} cores used")
    # what batching alone can gain on this device: on a CPU a batch costs about the sum of its images
    print(f"ceiling of batching alone: direct predict_many batch {args.max_batch} vs one-at-a-time: "
          f"{paired_ratio(many, one):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
