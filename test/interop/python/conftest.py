"""Fixtures of the Python interop suite, and the report the Vitest wrapper reads.

The suite expects a running mesh at FO_MESH_ADDR (host:port, h2c) and the
stubs generated from proto/ on PYTHONPATH; test/interop/python.test.ts sets up
both. FO_PYTEST_REPORT, when set, names a JSON file that receives one entry
per test, so the wrapper can show which Python test failed and why without
parsing pytest's console output.
"""

import json
import os

import grpc
import pytest

_results: list[dict[str, str]] = []


@pytest.fixture(scope="session")
def mesh_addr() -> str:
    addr = os.environ.get("FO_MESH_ADDR", "")
    if not addr:
        # A missing address must fail, never skip: a silent skip would let a
        # broken setup pass as green.
        pytest.fail("FO_MESH_ADDR is not set (host:port of a running mesh)")
    return addr


@pytest.fixture(scope="session")
def channel(mesh_addr: str):
    # A proxy from the environment must never see calls to a loopback mesh.
    with grpc.insecure_channel(mesh_addr, options=[("grpc.enable_http_proxy", 0)]) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # A test counts as passed only if setup, call and teardown all pass, so a
    # failure in any phase is recorded; the call phase records the pass.
    if report.failed or report.skipped or report.when == "call":
        _results.append(
            {
                "nodeid": report.nodeid,
                "when": report.when,
                "outcome": report.outcome,
                "longrepr": str(report.longrepr) if report.longrepr else "",
            }
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("FO_PYTEST_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"exitstatus": int(exitstatus), "results": _results}, f, indent=1)
