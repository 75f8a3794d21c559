"""The command the runner tests give `orchestrator agent run --exec`: what it does is
chosen by the first word of the task's description (subtasks take their parent's)."""

import json
import os
import signal
import subprocess
import sys
import time

task = json.load(sys.stdin)
env = os.environ
mode, _, argument = (task.get("description") or "ok").partition(" ")
attempt = int(env["ORCHESTRATOR_ATTEMPT"])


def write_result(**extra):
    with open(env["ORCHESTRATOR_RESULT_FILE"], "w") as handle:
        json.dump(
            {
                "task_id": env["ORCHESTRATOR_TASK_ID"],
                "title": env["ORCHESTRATOR_TASK_TITLE"],
                "description": env["ORCHESTRATOR_TASK_DESCRIPTION"],
                "session_id": env["ORCHESTRATOR_SESSION_ID"],
                "prompt": env["ORCHESTRATOR_SESSION_PROMPT"],
                "attempt": attempt,
                "api_url": env["ORCHESTRATOR_API_URL"],
                "has_token": bool(env.get("ORCHESTRATOR_TOKEN")),
                "stdin_id": task["id"],
                "cwd": os.getcwd(),
                **extra,
            },
            handle,
        )


def record_pids(pids):
    path = os.path.join(env["RUNNER_TEST_DIR"], f"{task['id']}-{attempt}.pids")
    with open(path + ".tmp", "w") as handle:
        handle.write(" ".join(str(pid) for pid in pids))
    os.rename(path + ".tmp", path)


if mode == "ok":
    print(f"working on {task['title']}", flush=True)
    print("::progress 50 halfway", flush=True)
    print("a warning", file=sys.stderr, flush=True)
    write_result()
elif mode == "silent":  # exits 0 without a result file
    print("line one")
    print("line two")
elif mode == "flaky":  # fails its first attempt
    if attempt == 1:
        print("flaky: first attempt fails", file=sys.stderr)
        sys.exit(3)
    write_result()
elif mode == "killed":  # dies of SIGKILL on its first attempt
    if attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    write_result()
elif mode == "permanent":
    print("broken for good", file=sys.stderr)
    sys.exit(int(argument or 5))
elif mode == "tree":  # children that ignore SIGTERM, and so does this process
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    children = [subprocess.Popen([sys.executable, "-c", ignore]) for _ in range(2)]
    time.sleep(0.3)  # the children have set their handlers
    record_pids([os.getpid()] + [child.pid for child in children])
    print("tree started", flush=True)
    time.sleep(600)
elif mode == "sleep":  # reports progress every half second for `argument` seconds
    record_pids([os.getpid()])
    deadline = time.monotonic() + float(argument or 600)
    while time.monotonic() < deadline:
        print("::progress 10 sleeping", flush=True)
        time.sleep(0.5)
    write_result()
elif mode == "flood":  # `argument` MB on stdout, as fast as it can
    line = ("x" * 99 + "\n").encode()
    block = line * 10_000  # 1 MB
    for _ in range(int(argument or 100)):
        sys.stdout.buffer.write(block)
    sys.stdout.flush()
    write_result(flooded=True)
elif mode == "live":  # a line every 25 ms, `argument` of them, each with its time
    for n in range(int(argument or 40)):
        print(f"live {n} {time.time():.6f}", flush=True)
        time.sleep(0.025)
    write_result()
