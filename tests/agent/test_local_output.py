"""Job output: capped to head + tail on disk, counted, readable cheaply, with bounded memory."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from jobnet_agent.output import CappedWriter, StoredOutput
from tests.agent.conftest import Agent, AgentDirs, new_key, supervisor_pids, wait_until

MIB = 1024 * 1024


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_a_200_mb_writer_is_capped_to_head_and_tail_with_bounded_supervisor_memory(dirs: AgentDirs) -> None:
    total = 200 * 1000 * 1000
    go = dirs.work / "go"
    script = dirs.script(
        "big.sh",
        f"printf HEAD; head -c {total - 8} /dev/zero; printf TAIL\nwhile [ ! -e {go} ]; do sleep 0.02; done\n",
    )
    agent = Agent(dirs, max_output_bytes=4 * MIB, tail_bytes=MIB)
    try:
        key = new_key()
        agent.launch(key, script)
        [supervisor] = supervisor_pids(dirs.state)
        wait_until(
            lambda: agent.call("tail", key=key, stream="stdout", maxBytes=4)["totalBytes"] == total,
            timeout=60,
            interval=0.1,
            what="all 200 MB to be pumped",
        )
        peak = _peak_rss_bytes(supervisor)
        go.touch()
        record = agent.wait_state(key, "exited")
        tail = agent.call("tail", key=key, stream="stdout", maxBytes=4)
        head = agent.call("read", key=key, stream="stdout", offset=0, length=4)
        whole = agent.call("read", key=key, stream="stdout", offset=0, length=8 * MIB)
    finally:
        agent.close()

    print("supervisor peak RSS while pumping 200 MB: %.1f MiB" % (peak / MIB))
    assert peak < 40 * MIB
    assert record["stdoutBytes"] == total and record["stdoutDropped"] == total - 4 * MIB
    assert tail == {"data": "TAIL", "totalBytes": total, "droppedBytes": total - 4 * MIB}
    assert base64.b64decode(head["data"]) == b"HEAD"
    assert len(base64.b64decode(whole["data"])) == 4 * MIB and whole["eof"] is True
    job_dir = next((dirs.state / "jobs").glob("*/*"))
    on_disk = sum(p.stat().st_size for p in job_dir.glob("stdout*") if p.is_file())
    assert on_disk <= 5 * MIB


def test_capped_writer_keeps_head_and_the_last_tail_bytes(tmp_path: Path) -> None:
    writer = CappedWriter(str(tmp_path), "stdout", max_bytes=10, tail_bytes=4)
    for chunk in (b"0123", b"456789abcd", b"efghij", b"k"):
        writer.write(chunk)
    stored = StoredOutput(str(tmp_path), "stdout")

    assert writer.total_bytes == 21 and writer.dropped_bytes == 11
    assert stored.sizes() == (21, 10, 11)
    assert stored.read(0, 100) == (b"012345hijk", 10)
    assert stored.read(4, 4) == (b"45hi", 10)
    assert stored.tail(3) == (b"ijk", 21, 11)
    writer.close()
    assert sorted(os.listdir(tmp_path)) == ["stdout", "stdout.tail.2", "stdout.tail.3"]


def test_capped_writer_under_the_cap_drops_nothing(tmp_path: Path) -> None:
    writer = CappedWriter(str(tmp_path), "stderr", max_bytes=10, tail_bytes=4)
    writer.write(b"abcdefghi")
    writer.close()

    assert StoredOutput(str(tmp_path), "stderr").read(0, 100) == (b"abcdefghi", 9)
    assert StoredOutput(str(tmp_path), "stderr").sizes() == (9, 9, 0)
    assert StoredOutput(str(tmp_path), "stdout").sizes() == (0, 0, 0)  # never written


def test_capped_writer_resumes_where_a_dead_writer_stopped(tmp_path: Path) -> None:
    first = CappedWriter(str(tmp_path), "stdout", max_bytes=10, tail_bytes=4)
    first.write(b"0123456789")
    first.close()
    resumed = CappedWriter(str(tmp_path), "stdout", max_bytes=10, tail_bytes=4, resume=True)
    resumed.write(b"abcdef")
    resumed.close()

    assert resumed.total_bytes == 16
    assert StoredOutput(str(tmp_path), "stdout").read(0, 100) == (b"012345cdef", 10)


def test_read_streams_the_full_output_in_chunks_and_eof_waits_for_the_end(dirs: AgentDirs) -> None:
    go = dirs.work / "go"
    script = dirs.script("data.sh", f"seq 1 30000\nwhile [ ! -e {go} ]; do sleep 0.02; done\necho end\n")
    expected = "".join(f"{i}\n" for i in range(1, 30001)).encode()
    agent = Agent(dirs)
    try:
        key = new_key()
        agent.launch(key, script)
        wait_until(
            lambda: agent.call("tail", key=key, stream="stdout", maxBytes=1)["totalBytes"] == len(expected),
            what="the numbers to be written",
        )
        chunks, offset, eof = [], 0, False
        for _ in range(100):
            answer = agent.call("read", key=key, stream="stdout", offset=offset, length=16384)
            data = base64.b64decode(answer["data"])
            if not data:
                eof = answer["eof"]
                break
            chunks.append(data)
            offset += len(data)
        go.touch()
        agent.wait_state(key, "exited")
        last = agent.call("read", key=key, stream="stdout", offset=offset, length=16384)
    finally:
        agent.close()

    assert b"".join(chunks) == expected and eof is False  # still running: more may come
    assert base64.b64decode(last["data"]) == b"end\n" and last["eof"] is True


def test_the_agent_log_goes_where_log_file_says(dirs: AgentDirs) -> None:
    log = dirs.root / "elsewhere.log"
    agent = Agent(dirs, log_file=log)
    agent.call("ping")
    agent.close()

    assert "serve started" in log.read_text() and not dirs.agent_log.exists()
