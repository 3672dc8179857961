"""The E2B Python SDK against Reins: the contract of Reins' E2B compatibility.

Run by scripts/test-e2b, which starts `reins up` and sets E2B_API_KEY,
E2B_API_URL and E2B_SANDBOX_URL, the only settings an E2B program changes.
Features Reins does not serve yet are listed in docs/e2b.md, not here.
"""

import os
import time

import pytest
import json
import urllib.error
import urllib.request

from e2b import PtySize, Sandbox, SandboxQuery
from e2b.exceptions import AuthenticationException, FileNotFoundException, NotFoundException
from e2b.sandbox.filesystem.filesystem import FileType, WriteEntry
from e2b.sandbox_sync.commands.command import Commands
from e2b.sandbox.commands.command_handle import CommandExitException


@pytest.fixture
def sandbox():
    sb = Sandbox.create(timeout=120)
    yield sb
    sb.kill()


def test_create_with_metadata_envs_and_timeout():
    sb = Sandbox.create(metadata={"suite": "e2b", "case": "create"}, envs={"GREETING": "hello"}, timeout=90)
    try:
        info = sb.get_info()
        assert info.sandbox_id == sb.sandbox_id and "-" not in sb.sandbox_id
        assert info.metadata == {"suite": "e2b", "case": "create"}
        assert info.template_id == "base"
        left = (info.end_at - info.started_at).total_seconds()
        assert 85 <= left <= 95, left
        assert sb.commands.run("echo $GREETING").stdout == "hello\n"
    finally:
        sb.kill()


def test_metrics_report_memory_and_disk(sandbox):
    sandbox.commands.run("head -c 3000000 /dev/urandom > /tmp/blob")
    m = sandbox.get_metrics()
    assert len(m) >= 1
    last = m[-1]
    assert last.cpu_count == 1 and 0 <= last.cpu_used_pct <= 100
    assert 0 < last.mem_used <= last.mem_total == 512 << 20
    assert 3_000_000 <= last.disk_used <= last.disk_total


def test_run_in_the_foreground_as_user_with_cwd_and_envs(sandbox):
    r = sandbox.commands.run("echo out; echo err >&2; whoami; pwd; echo $X", envs={"X": "1"})
    assert (r.exit_code, r.stderr) == (0, "err\n")
    assert r.stdout == "out\nuser\n/home/user\n1\n"
    assert sandbox.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"


def test_a_non_zero_exit_raises_the_sdk_exception(sandbox):
    with pytest.raises(CommandExitException) as e:
        sandbox.commands.run("echo partial; exit 7")
    assert e.value.exit_code == 7 and e.value.stdout == "partial\n"


def test_streaming_callbacks_and_login_shell(sandbox):
    out, err = [], []
    r = sandbox.commands.run("for i in 1 2 3; do echo $i; sleep 0.05; done; echo e >&2", on_stdout=out.append, on_stderr=err.append)
    assert "".join(out) == "1\n2\n3\n" and "".join(err) == "e\n" and r.exit_code == 0
    assert sandbox.commands.run("shopt -q login_shell && echo login").stdout == "login\n", "run as bash -l -c"


def test_background_commands_take_stdin_and_can_be_killed(sandbox):
    h = sandbox.commands.run("read line; echo got $line", background=True, stdin=True)
    sandbox.commands.send_stdin(h.pid, "abc\n")
    assert h.wait().stdout == "got abc\n"
    sleeper = sandbox.commands.run("sleep 60", background=True)
    assert sleeper.kill() is True
    with pytest.raises(CommandExitException):
        sleeper.wait()


def test_pty_create_resize_input_and_kill(sandbox):
    h = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=30)
    sandbox.pty.resize(h.pid, PtySize(rows=30, cols=100))
    sandbox.pty.send_stdin(h.pid, b"stty size; tty; exit 0\n")
    out = bytearray()
    h.wait(on_pty=out.extend)
    text = out.decode(errors="replace")
    assert "30 100" in text and "/dev/pts/" in text, text
    other = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=30)
    attached = sandbox.pty.connect(other.pid, timeout=30)
    sandbox.pty.send_stdin(other.pid, b"echo again-$((2+2)); exit 0\n")
    seen = bytearray()
    attached.wait(on_pty=seen.extend)
    assert "again-4" in seen.decode(errors="replace"), "an attached terminal's output is pty data"
    last = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=30)
    assert sandbox.pty.kill(last.pid) is True


def test_files_write_read_list_stat_move_remove(sandbox):
    info = sandbox.files.write("/home/user/notes/a.txt", "hello")
    assert (info.path, info.name) == ("/home/user/notes/a.txt", "a.txt"), "parents are made"
    batch = sandbox.files.write_files([WriteEntry(path="b.txt", data="B"), WriteEntry(path="/tmp/c.bin", data=b"\x00\xff")])
    assert [w.path for w in batch] == ["/home/user/b.txt", "/tmp/c.bin"], "relative paths start at the home"
    assert sandbox.files.read("notes/a.txt") == "hello"
    assert bytes(sandbox.files.read("/tmp/c.bin", format="bytes")) == b"\x00\xff"
    names = {(e.name, e.type) for e in sandbox.files.list("/home/user")}
    assert {("notes", FileType.DIR), ("b.txt", FileType.FILE)} <= names, names
    assert sandbox.files.exists("b.txt") and not sandbox.files.exists("nope.txt")
    st = sandbox.files.get_info("notes/a.txt")
    assert (st.size, st.type, st.permissions, st.owner) == (5, FileType.FILE, "-rw-r--r--", "user")
    assert sandbox.files.make_dir("made/deep") is True and sandbox.files.make_dir("made/deep") is False
    moved = sandbox.files.rename("b.txt", "made/b2.txt")
    assert moved.path == "/home/user/made/b2.txt"
    assert sandbox.commands.run("cat made/b2.txt").stdout == "B", "files and commands see the same tree"
    sandbox.files.remove("made")
    assert not sandbox.files.exists("made/b2.txt")
    with pytest.raises(FileNotFoundException):
        sandbox.files.read("missing.txt")
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info("missing.txt")


def test_watch_dir_reports_changes(sandbox):
    sandbox.files.make_dir("watched")
    handle = sandbox.files.watch_dir("watched")
    try:
        sandbox.files.write("watched/new.txt", "x")
        sandbox.commands.run("rm watched/new.txt")
        seen = []
        deadline = time.time() + 10
        while time.time() < deadline and not any(e.name == "new.txt" and e.type.name == "REMOVE" for e in seen):
            seen += handle.get_new_events()
            time.sleep(0.1)
        kinds = [e.type.name for e in seen if e.name == "new.txt"]
        assert "CREATE" in kinds and "REMOVE" in kinds, seen
    finally:
        handle.stop()


@pytest.mark.skipif(not hasattr(Commands, "stream_input"), reason="this SDK version has no commands.stream_input")
def test_stream_input_feeds_stdin_in_order(sandbox):
    cat = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.stream_input(cat.pid, ["a\n", b"b\n", "c\n"])
    sandbox.commands.close_stdin(cat.pid)
    assert cat.wait().stdout == "a\nb\nc\n"


def test_commands_list_and_connect_to_a_running_command(sandbox):
    h = sandbox.commands.run("for i in $(seq 1 30); do echo tick $i; sleep 0.1; done", background=True)
    listed = [p for p in sandbox.commands.list() if p.pid == h.pid]
    assert len(listed) == 1 and listed[0].cmd == "/bin/bash" and "tick" in " ".join(listed[0].args), listed
    again = sandbox.commands.connect(h.pid)
    result = again.wait()
    assert result.exit_code == 0 and "tick 30" in result.stdout, result.stdout
    assert not [p for p in sandbox.commands.list() if p.pid == h.pid], "gone once it exited"


def test_files_written_by_commands_survive_pause_and_connect():
    sb = Sandbox.create(timeout=120)
    try:
        sb.commands.run("echo kept > /home/user/state.txt")
        assert sb.pause() is True
        assert Sandbox.get_info(sb.sandbox_id).state.value == "paused"
        again = Sandbox.connect(sb.sandbox_id, timeout=120)
        assert again.get_info().state.value == "running"
        assert again.commands.run("cat /home/user/state.txt").stdout == "kept\n"
        assert again.files.read("state.txt") == "kept\n"
    finally:
        sb.kill()


def test_list_filters_by_metadata_and_pages():
    tag = f"list-{os.getpid()}-{time.time_ns()}"
    made = [Sandbox.create(metadata={"tag": tag}, timeout=120) for _ in range(3)]
    try:
        pager = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}), limit=2)
        first = pager.next_items()
        assert len(first) == 2 and pager.has_next
        rest = pager.next_items()
        assert len(rest) == 1 and not pager.has_next
        assert {s.sandbox_id for s in first + rest} == {s.sandbox_id for s in made}
        assert all(s.metadata == {"tag": tag} for s in first + rest)
    finally:
        for s in made:
            s.kill()


def test_set_timeout_and_expiry():
    sb = Sandbox.create(timeout=120)
    sb.set_timeout(2)
    time.sleep(4)
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sb.sandbox_id)
    assert sb.kill() is False, "already gone"


def test_auto_pause_pauses_at_the_timeout_and_connect_resumes():
    sb = Sandbox.create(timeout=2, lifecycle={"on_timeout": "pause"})
    try:
        sb.commands.run("echo before > /home/user/p.txt")
        deadline = time.time() + 10
        while time.time() < deadline and Sandbox.get_info(sb.sandbox_id).state.value != "paused":
            time.sleep(0.2)
        assert Sandbox.get_info(sb.sandbox_id).state.value == "paused"
        again = Sandbox.connect(sb.sandbox_id, timeout=60)
        assert again.commands.run("cat p.txt").stdout == "before\n"
        left = (again.get_info().end_at - again.get_info().started_at).total_seconds()
        assert left > 30, "the timeout starts again at connect"
    finally:
        sb.kill()


def test_kill_and_unknown_sandboxes():
    sb = Sandbox.create(timeout=60)
    assert sb.is_running() is True
    assert sb.kill() is True
    assert sb.is_running() is False
    assert Sandbox.kill(sb.sandbox_id) is False
    with pytest.raises(NotFoundException):
        Sandbox.connect("nosuchsandbox0000000")
    with pytest.raises(NotFoundException):
        Sandbox.get_info("nosuchsandbox0000000")


def test_a_wrong_key_is_an_authentication_error():
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="reins_wrong_key_wrong_key_wrong_key_wrong_key_")
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="reins_wrong_key_wrong_key_wrong_key_wrong_key_").next_items()


def envd_start(sandbox_id, token, command):
    """A raw Connect call of process.Process/Start, as the SDK makes it."""
    msg = json.dumps({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", command]}, "stdin": False}).encode()
    body = b"\x00" + len(msg).to_bytes(4, "big") + msg
    req = urllib.request.Request(
        os.environ["E2B_SANDBOX_URL"] + "/process.Process/Start",
        data=body,
        method="POST",
        headers={"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1",
                 "X-Access-Token": token, "E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "49983"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_wrong_access_token_is_refused_and_the_sandbox_keeps_working(sandbox):
    status, body = envd_start(sandbox.sandbox_id, "sbt_forged", "echo no")
    assert status == 404 and json.loads(body)["code"] == "not_found", (status, body)
    status, body = envd_start(sandbox.sandbox_id, "", "echo no")
    assert status == 401 and json.loads(body)["code"] == "unauthenticated", (status, body)
    assert sandbox.commands.run("echo still fine").stdout == "still fine\n"
