"""The Python tool's sandbox: it runs code, and cannot read the user's files, open a socket, start
processes, run forever or take all the memory."""

from __future__ import annotations

import socket
import threading

from lmstack.sandbox import run_python


def test_code_runs_and_can_use_its_own_folder():
    result = run_python("import json, statistics\nopen('x.txt', 'w').write('3 4 5')\n"
                        "print(json.dumps(statistics.mean(map(int, open('x.txt').read().split()))))")
    assert result.ok and result.stdout.strip() == "4"


def test_cannot_read_the_users_home_or_list_it(tmp_path):
    secret = tmp_path / "home" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the secret")
    for code in (f"print(open({str(secret)!r}).read())", f"import os; print(os.listdir({str(secret.parent)!r}))",
                 "import os; print(open(os.path.expanduser('~root') + '/.bashrc').read())", "print(open('/etc/passwd').read())"):
        result = run_python(code)
        assert not result.ok and "the secret" not in result.stdout
        assert "PermissionError: sandbox" in result.stderr


def test_cannot_open_a_socket_even_to_a_listening_local_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    result = run_python(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')")
    server.close()
    assert not result.ok and "connected" not in result.stdout and not accepted


def test_no_processes_no_ctypes():
    assert "PermissionError" in run_python("import subprocess; subprocess.run(['id'])").stderr
    assert not run_python("import os; os.system('id')").ok
    assert not run_python("import ctypes; ctypes.CDLL(None)").ok


def test_time_and_memory_limits():
    assert run_python("while True: pass", timeout=1.5).timed_out
    result = run_python("x = bytearray(1 << 31)\nprint('allocated')", memory_mb=256)
    assert not result.ok and "MemoryError" in result.stderr
