import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from reactor.config import Config
from reactor.handlers import doctor as doctor_handler
from reactor.store import privileges
from tests.ops_seed import invoke
from tests.pg import PgServer

_roles = itertools.count()


def lines(out: str) -> dict[str, str]:
    """check name -> its whole line."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("ok", "fail"):
            found[parts[1]] = line
    return found


async def run_doctor(config: Config, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, str]]:
    code = await invoke(doctor_handler.register, config, ["doctor", "--skip-detector", *extra])
    return code, lines(capsys.readouterr().out)


async def test_doctor_all_ok(
    make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str], share: Path
) -> None:
    code, found = await run_doctor(make_config(), capsys)
    assert code == 0, found
    assert set(found) == {"database", "schema", "privileges", "share", "observer", "dlib", "models", "gpu"}
    assert all(line.startswith("ok ") for line in found.values())
    assert found["share"] == f"ok    share       {share} is online (marker .reactor-share present)"
    assert found["privileges"] == "ok    privileges  role postgres has every privilege the reactor uses"
    assert found["models"] == "ok    models      face_recognition_models: 4 model files present"


async def test_doctor_broken_share_marker(
    make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str], share: Path
) -> None:
    (share / ".reactor-share").unlink()
    code, found = await run_doctor(make_config(), capsys)
    assert code == 1
    marker = os.path.join(str(share), ".reactor-share")
    assert found["share"] == (
        f"fail  share       marker {marker} is missing; fix: mount the share, then create the marker file "
        f"{marker} on it (README: Watching the share)"
    )
    assert [name for name, line in found.items() if line.startswith("fail")] == ["share"]


async def test_doctor_share_root_missing(
    make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    gone = tmp_path / "not-mounted"
    code, found = await run_doctor(make_config(images={"root": str(gone)}), capsys)
    assert code == 1
    assert found["share"] == (
        f"fail  share       root {gone} does not exist; fix: mount the share there, or set images.root"
    )


async def test_doctor_role_lacking_privileges(
    pg: PgServer, database: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    role = f"limited_{os.getpid()}_{next(_roles)}"
    pg.psql(f"CREATE ROLE {role} LOGIN")
    try:
        pg.psql(privileges.grant_sql(role), database)
        pg.psql(f"REVOKE INSERT, DELETE ON face_metadata FROM {role}", database)
        config = make_config(database={"dsn": pg.dsn(database, user=role)})
        code, found = await run_doctor(config, capsys)
        assert code == 1
        assert found["database"].startswith(f"ok    database    reachable: host={pg.socket_dir} ")
        assert found["database"].endswith(f"as role {role}")
        assert found["schema"].startswith("ok ")
        assert found["privileges"] == (
            f"fail  privileges  role {role} lacks INSERT on face_metadata, DELETE on face_metadata; "
            f"fix: ask the database owner to run the GRANTs printed by `reactor db sql --grants-only --role {role}`"
        )
    finally:
        pg.psql(f"DROP OWNED BY {role}", database)
        pg.psql(f"DROP ROLE {role}")


async def test_doctor_database_unreachable(
    make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = make_config(
        database={"dsn": f"postgresql://postgres@/nowhere?host={tmp_path}&port=1", "connect_timeout_seconds": 2.0}
    )
    code, found = await run_doctor(config, capsys)
    assert code == 1
    assert found["database"].startswith(f"fail  database    cannot connect to PostgreSQL at host={tmp_path} port=1 ")
    assert found["database"].endswith("; fix: check [database] dsn, that the server is running, and the password")
    assert found["schema"] == (
        "fail  schema      not checked: the database is unreachable; fix: fix the database line above first"
    )
    # The checks that do not need the database still run.
    assert found["share"].startswith("ok ")


async def test_doctor_starts_the_detector_on_a_sample(
    make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    code = await invoke(doctor_handler.register, make_config(), ["doctor"])
    found = lines(capsys.readouterr().out)
    assert code == 0, found
    assert found["detector"].startswith("ok    detector    started in ")
    assert "found 1 face in the sample photo astronaut.jpg" in found["detector"]


def _fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, code: int = 0) -> None:
    """nvidia-smi is outside the boundary under test: a script on PATH prints its CSV."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {code}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_gpu_memory_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reactor.ops.doctor import gpu_check

    _fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA GeForce GTX 1650, 1960, 4096")
    assert gpu_check(True).line() == "ok    gpu         NVIDIA GeForce GTX 1650: 1960 MiB free of 4096 MiB"
    assert gpu_check(False).line() == (
        "ok    gpu         not used: this dlib has no CUDA, so detection runs HOG on the CPU"
    )


def test_gpu_nearly_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reactor.ops.doctor import gpu_check

    _fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA GeForce GTX 1650, 300, 4096")
    assert gpu_check(True).line() == (
        "fail  gpu         NVIDIA GeForce GTX 1650: 300 MiB free of 4096 MiB; fix: free GPU memory (under 512 MiB on "
        'NVIDIA GeForce GTX 1650): stop other GPU programs, or set detector.model = "hog"'
    )


async def test_doctor_embedded_database_that_cannot_start(
    make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    config = make_config(database={"dsn": "", "embedded_dir": str(blocker / "pgdata")})
    code, found = await run_doctor(config, capsys)
    assert code == 1
    assert found["database"].startswith(
        f"fail  database    cannot start the embedded PostgreSQL in {blocker / 'pgdata'}: [Errno 20] Not a directory"
    )
    assert found["database"].endswith(
        "; fix: set [database] embedded_dir to a writable directory, or [database] dsn to use an existing server"
    )
    assert found["share"].startswith("ok ")
