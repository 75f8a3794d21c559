"""TaskOutput on real pipes and threads, with a log sender slower than the command (the
end-to-end runs against the server are in test_runner.py): the writer never waits, the
buffer stays bounded with a marker for what was dropped, `::progress` lines are reported,
and a refusal or the server's truncation stops the sending."""

from __future__ import annotations

import os
import threading
import time

from orchestrator_client.errors import Conflict
from orchestrator_client.task_output import TaskOutput


class Log:
    """What a sender received, and how much the output held while sending."""

    def __init__(self, output_of, *, delay=0.0, truncate_after=None, refuse=None):
        self.lines: list[dict] = []
        self.calls = 0
        self.most_pending = 0
        self.delay = delay
        self.truncate_after = truncate_after
        self.refuse = refuse
        self.output_of = output_of

    def __call__(self, lines):
        self.calls += 1
        output = self.output_of()
        if output is not None:
            self.most_pending = max(self.most_pending, output._pending_bytes)
        if self.refuse is not None:
            raise self.refuse
        time.sleep(self.delay)
        self.lines += lines
        full = self.truncate_after is not None and len(self.lines) >= self.truncate_after
        return {"accepted": len(lines), "truncated": full}


def pipes():
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    return (
        os.fdopen(out_read, "rb"),
        os.fdopen(out_write, "wb"),
        os.fdopen(err_read, "rb"),
        os.fdopen(err_write, "wb"),
    )


def attached(sender, progress=None, refused=None, **options):
    output = TaskOutput(
        sender,
        progress if progress is not None else (lambda *_: None),
        refused if refused is not None else (lambda _exc: None),
        **options,
    )
    out_read, out_write, err_read, err_write = pipes()
    output.attach(out_read, err_read)
    return output, out_write, err_write


def test_a_fast_writer_never_waits_and_the_buffer_stays_bounded():
    holder = {}
    log = Log(lambda: holder["output"], delay=0.2)
    output, out, err = attached(log, buffer_bytes=256 * 1024)
    holder["output"] = output
    line = b"y" * 99 + b"\n"
    began = time.monotonic()
    for _ in range(200):  # 20 MB, far more than 0.2 s a batch of 64 KB can send
        out.write(line * 1000)
    out.close()
    err.write(b"the end\n")
    err.close()
    written_in = time.monotonic() - began
    output.finish(timeout=10)

    assert written_in < 5, f"the writer waited for the sender ({written_in:.1f} s)"
    assert output.lines_read == 200_001 and output.lines_dropped > 100_000
    assert log.most_pending <= 256 * 1024
    markers = [ln["text"] for ln in log.lines if ln["text"].startswith("[orchestrator runner:")]
    assert markers and all("lines dropped" in text for text in markers)
    assert len(log.lines) - len(markers) + output.lines_dropped == 200_001
    assert output.tail("stderr") == ["the end"] and output.tail()[-1] in ("the end", "y" * 99)


def test_progress_lines_are_reported_and_kept_in_the_log():
    reported = []
    log = Log(lambda: None)
    output, out, err = attached(
        log, progress=lambda *args: reported.append(args), progress_seconds=0
    )
    out.write(b"::progress 40 compiling\n::progress 250\nplain\n")
    out.close()
    err.close()
    output.finish()
    assert reported and reported[-1] == (100, None)  # capped; earlier ones may coalesce
    assert set(reported) <= {(40, "compiling"), (100, None)}
    assert [ln["text"] for ln in log.lines] == [
        "::progress 40 compiling",
        "::progress 250",
        "plain",
    ]


def test_the_servers_truncation_stops_the_sending():
    log = Log(lambda: None, truncate_after=1)
    output, out, err = attached(log, flush_seconds=0.01)
    out.write(b"first\n")
    out.flush()
    time.sleep(0.3)
    out.write(b"second\n" * 1000)
    out.close()
    err.close()
    output.finish()
    assert log.calls == 1 and output.truncated and output.lines_read == 1001


def test_a_refusal_stops_the_sending_and_says_so_once():
    refusals = []
    log = Log(lambda: None, refuse=Conflict(message="finished"))
    output, out, err = attached(log, refused=refusals.append, flush_seconds=0.01)
    writer = threading.Thread(target=lambda: (out.write(b"line\n" * 100_000), out.close()))
    writer.start()
    writer.join(5)
    err.close()
    output.finish()
    assert not writer.is_alive()
    assert log.calls == 1 and len(refusals) == 1 and not output.shipping


def test_progress_is_reported_at_most_every_progress_seconds():
    reported = []
    output, out, err = attached(
        Log(lambda: None), progress=lambda *args: reported.append(args), progress_seconds=0.4
    )
    for n in range(20):  # a progress line every 50 ms for a second
        out.write(f"::progress {n}\n".encode())
        out.flush()
        time.sleep(0.05)
    out.close()
    err.close()
    output.finish()
    assert reported[0] == (0, None) and 2 <= len(reported) <= 4, reported
    assert reported == sorted(reported), "the latest each time"
