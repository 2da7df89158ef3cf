"""The model judge against a real HTTP server on 127.0.0.1, started here: slow, failing and garbage
replies, retries, the cache, a server that is down, and a GRPO step that goes on through failures."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import QUICK_RUN
from vlmrl.config import load_config
from vlmrl.config.checks import check_before_loading
from vlmrl.config.schema import JudgeConfig
from vlmrl.data.sample import Sample
from vlmrl.errors import UserError
from vlmrl.rewards.judge import JudgeReward, JudgeUnavailableError
from vlmrl.train.grpo import GRPOTrainer

SLOW_S = 5.0  # how long a "slow" reply takes; the judge's timeout in these tests is far below it


class Judge(ThreadingHTTPServer):
    """A tiny OpenAI-compatible judge. What it does with a request depends on the completion text:
    ``fail…`` → HTTP 500, ``slow…`` → a reply after SLOW_S, ``garbage…`` → a body that is not JSON,
    ``babble…`` → a reply with no number; otherwise "Score: 10" when the reference answer is in it,
    else "Score: 0". With ``every_fail=k`` the k-th, 2k-th, … request fails instead, and with
    ``every_slow=k`` they are slow (whatever the text)."""

    daemon_threads = True
    request_queue_size = 128  # socketserver's default backlog of 5 would drop concurrent connects

    def __init__(self, every_fail: int = 0, every_slow: int = 0, slow_s: float = SLOW_S):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.every_fail, self.every_slow, self.slow_s = every_fail, every_slow, slow_s
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request, client_address) -> None:  # a client that timed out hung up
        pass


class Handler(BaseHTTPRequestHandler):
    server: Judge

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._send(200, json.dumps({"data": [{"id": "judge"}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            n = len(self.server.requests)
        prompt = body["messages"][-1]["content"]
        answer, _, completion = prompt.partition("|")
        s = self.server
        if completion.startswith("fail") or (s.every_fail and n % s.every_fail == 0):
            return self._send(500, b"internal error")
        if completion.startswith("slow") or (s.every_slow and n % s.every_slow == 0):
            time.sleep(s.slow_s)
        if completion.startswith("garbage"):
            return self._send(200, b"<html>bad gateway</html>")
        if completion.startswith("babble"):
            content = "I cannot judge this."
        elif s.every_fail or s.every_slow:  # training: the letter fraction of the completion, 0–10
            content = f"Score: {10 * sum(c.isalpha() for c in completion[:8]) / 8:.2f}"
        else:
            content = f"Score: {10 if answer in completion else 0}"
        self._send(
            200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        )

    def _send(self, code: int, payload: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture()
def judge_server():
    servers = []

    def start(**kw) -> Judge:
        servers.append(Judge(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def judge_cfg(url: str, **kw) -> JudgeConfig:
    return JudgeConfig(
        url=url, prompt="{answer}|{completion}", timeout_s=0.3, retries=1, backoff_s=0.01, **kw
    )


def test_hundred_calls_with_failures_slow_and_garbage_replies(judge_server):
    server = judge_server()
    judge = JudgeReward(judge_cfg(server.url, concurrency=16))
    # 100 rollouts in 25 groups of 4; answer of group g is str(g)
    samples = [Sample(id=str(g), images=[], problem="?", answer=f"a{g}") for g in range(25)]
    per_rollout = [samples[i // 4] for i in range(100)]
    completions = []
    for i, s in enumerate(per_rollout):
        kind = ("fail", "slow")[i % 2] if i % 10 in (0, 1) else ("garbage" if i % 20 == 2 else "")
        kind = "babble" if i % 20 == 12 else kind
        right = i % 4 != 3  # the last of each group is wrong
        completions.append(f"{kind} {s.answer if right else 'nope'}")
    t0 = time.perf_counter()
    out = judge.score_batch(completions, per_rollout)
    elapsed = time.perf_counter() - t0
    failed = [r.parts["failed"] for r in out]
    unparsed = [r.parts["unparsed"] for r in out]
    # 10 "fail" (HTTP 500 twice), 10 "slow" (timed out twice), 5 "garbage" (not JSON twice): failed
    assert [i for i in range(100) if failed[i]] == [i for i in range(100) if i % 10 in (0, 1) or i % 20 == 2]
    assert sum(unparsed) == 5
    # each call: 2 attempts × 0.3 s at most, plus backoff; 16 in flight
    assert elapsed < 4.0, elapsed  # < SLOW_S: no call waited for a slow reply (measured: ≈ 1.5 s)
    # retried: fail, slow and garbage were asked twice; the rest once. The server thread records a
    # request when it handles it, which under load can lag the client's timeout: wait (≤ 5 s) for
    # the count to settle before comparing, so the check reads the server, not the race.
    settle = time.monotonic() + 5.0
    while len(server.requests) < 100 + 25 and time.monotonic() < settle:
        time.sleep(0.05)
    assert len(server.requests) == 100 + 25
    for i, r in enumerate(out):
        if not failed[i] and not unparsed[i]:
            assert r.total == (0.0 if i % 4 == 3 else 1.0)
        if failed[i] or unparsed[i]:  # the mean of the group's successful judgements
            ok = [out[j].total for j in range(i - i % 4, i - i % 4 + 4) if not failed[j] and not unparsed[j]]
            assert r.total == pytest.approx(sum(ok) / len(ok) if ok else 0.0)
    # the cache answers what was judged before (a failed call is asked again)
    again = judge.score_batch(completions, per_rollout)
    assert sum(r.parts["cached"] for r in again) == 75 and len(server.requests) == 125 + 50
    assert [r.total for r in again] == [r.total for r in out]


def test_server_down_is_one_clear_line(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    judge = JudgeReward(judge_cfg(url))
    with pytest.raises(
        JudgeUnavailableError, match=rf"reward\.judge\.url {url}: cannot connect .*start the judge"
    ):
        judge.probe()
    with pytest.raises(JudgeUnavailableError, match=rf"reward\.judge\.url {url}: cannot connect"):
        judge.score_batch(["x"], [Sample(id="0", images=[], problem="?", answer="1")])
    cfg = load_config(overrides=["reward.weights={judge: 1.0}", f"reward.judge.url={url}"])
    with pytest.raises(JudgeUnavailableError):  # before any model loads
        check_before_loading(cfg, model_path=str(tmp_path))
    with pytest.raises(
        UserError, match=r"reward\.judge\.url: reward\.weights has 'judge' but no judge server"
    ):
        check_before_loading(load_config(overrides=["reward.weights={judge: 1.0}"]), model_path=str(tmp_path))
    with pytest.raises(UserError, match=r"reward\.judge\.concurrency: must be ≥ 1, got 0"):
        JudgeReward(JudgeConfig(url=url, concurrency=0))


def test_grpo_goes_on_through_judge_failures_and_counts_them(tiny_dir, tmp_path, judge_server, plugin):
    # of the 8 requests #4 and #8 fail and #7 answers after 10 s
    server = judge_server(every_fail=4, every_slow=7, slow_s=10.0)
    cfg = load_config(
        overrides=[
            f"model.path={tiny_dir}",
            f"log.run_dir={tmp_path}",
            *QUICK_RUN,
            "train.steps=1",
            f"reward.modules=[{plugin}]",
            "reward.weights={judge: 0.5, test_letters: 0.5}",  # mixed with a rule reward by weight
            f"reward.judge.url={server.url}",
            "reward.judge.prompt='|{completion}'",
            "reward.judge.timeout_s=0.3",
            "reward.judge.retries=0",
        ]
    )
    trainer = GRPOTrainer(cfg)
    metrics = trainer.train_step()
    assert metrics["time/generate_s"] < 10.0  # sampling and judging: the slow reply did not hold it
    assert len(server.requests) == 8
    assert metrics["reward/judge/failed"] == pytest.approx(3 / 8)
    assert metrics["reward/judge"] > 0 and metrics["reward/std_in_group"] > 0
    assert metrics["reward/total"] == pytest.approx(
        0.5 * metrics["reward/judge"] + 0.5 * metrics["reward/test_letters"]
    )
