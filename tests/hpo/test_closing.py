"""What a command closes at its end: what its modules registered, once each, the last first."""

import subprocess
import sys

from hpo import closing


def test_close_all_calls_each_registered_closer_once_the_last_first(monkeypatch):
    monkeypatch.setattr(closing, "_CLOSERS", [])
    calls = []

    def first() -> None:
        calls.append("first")

    def second() -> None:
        calls.append("second")

    closing.on_close(first)
    closing.on_close(second)
    closing.on_close(first)  # a module imported again registers nothing new
    closing.close_all()
    assert calls == ["second", "first"]


def test_the_storage_registers_its_closing_when_first_imported():
    code = (
        "from hpo import closing; assert not closing._CLOSERS; "
        "import hpo.storage; assert closing._CLOSERS == [hpo.storage.close_storages]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
