"""A single-node Apache Kafka (KRaft) on localhost, run from jars that Maven resolves.

Layout under `home` (default `.fi/kafka/`): `libs/` (the broker's classpath), `data/`
(formatted once), `logs/`, `server.properties`, `kafka.pid`. Readiness is an admin
request that succeeds, never a sleep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from structlog import get_logger

from fi_stream.errors import KafkaSetupError
from fi_stream.kafka.secure import (
    ADMIN,
    MECHANISM,
    SecureFiles,
    broker_properties,
    ensure_users,
    make_tls,
    scram_args,
)

log = get_logger(__name__)


def find_infra_dir() -> Path:
    """`infra/kafka` of the checkout this package runs from (or of the working directory)."""
    candidates = [Path(__file__).resolve().parents[2], Path.cwd()]
    for root in candidates:
        d = root / "infra" / "kafka"
        if (d / "pom.xml").exists():
            return d
    raise KafkaSetupError(
        "infra/kafka/pom.xml not found: run from an fi-stream checkout, or point at an "
        "existing cluster with FI_KAFKA_BOOTSTRAP"
    )


@dataclass(frozen=True, kw_only=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    home: Path


#: The local broker compiles with C1 only. A fresh JVM's C2 compiler otherwise takes up to
#: 70 % of a core for minutes of load (2 cores, `bench e2e` on a fresh broker: p99 at half
#: the maximum rate 814 ms with C2, 150 ms with C1); C1 code costs ~7 % more broker CPU
#: once warm. A long-lived production broker should keep the JVM's defaults.
JIT_OPTIONS = ("-XX:TieredStopAtLevel=1",)


def render_properties(template: str, values: dict[str, object],
                      overrides: dict[str, str]) -> str:
    """The template with its placeholders filled in, then each key of `overrides` set:
    replaced where the template has it, appended where it does not."""
    lines = Template(template).substitute(values).splitlines()
    left = dict(overrides)
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        if not line.lstrip().startswith("#") and "=" in line and key in left:
            out.append(f"{key}={left.pop(key)}")
        else:
            out.append(line)
    out += [f"{key}={value}" for key, value in left.items()]
    return "\n".join(out) + "\n"


class LocalKafka:
    """Start, stop and inspect the local broker; every method is idempotent.

    By default a single node that is broker and controller. `node_id`, `overrides` (for
    `controller.quorum.voters` and replication settings), `cluster_id` and a shared `libs`
    make it one node of a cluster (see `fi_stream.kafka.local_cluster`).
    """

    def __init__(self, home: Path, *, port: int = 19092, controller_port: int = 19093,
                 infra_dir: Path | None = None, heap: str = "512m",
                 overrides: dict[str, str] | None = None, cluster_id: str | None = None,
                 libs: Path | None = None, secure: bool = False,
                 users: list[str] | None = None) -> None:
        self.home = home.resolve()
        #: SASL_SSL + SCRAM + ACLs (fi_stream.kafka.secure); `users` get SCRAM credentials.
        self.secure = secure
        self.users = list(users or [])
        self.port = port
        self.controller_port = controller_port
        self.infra = infra_dir or find_infra_dir()
        self.heap = heap
        self.overrides = dict(overrides or {})
        self.cluster_id = cluster_id
        self._shared_libs = libs.resolve() if libs is not None else None
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secure_files(self) -> SecureFiles:
        tls = self.home / "tls"
        return SecureFiles(ca=tls / "ca.pem", keystore=tls / "broker.pem",
                           users=self.home / "users.json")

    def client_kwargs(self, user: str = ADMIN) -> dict[str, Any]:
        """aiokafka connection arguments for `user` (its password from users.json)."""
        if not self.secure:
            return {"bootstrap_servers": self.bootstrap}
        files = self.secure_files
        return {"bootstrap_servers": self.bootstrap, "security_protocol": "SASL_SSL",
                "sasl_mechanism": MECHANISM, "sasl_plain_username": user,
                "sasl_plain_password": files.passwords()[user],
                "ssl_context": create_ssl_context(cafile=str(files.ca))}

    @property
    def _pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def _libs(self) -> Path:
        return self._shared_libs or self.home / "libs"

    # -- set-up -----------------------------------------------------------------------------

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java or not Path(java).exists():
            raise KafkaSetupError(
                "Java 17+ is needed to run the local Kafka broker: install a JDK "
                "(e.g. `apt-get install openjdk-17-jre-headless`) or set FI_KAFKA_BOOTSTRAP"
            )
        return java

    def resolve_jars(self) -> Path:
        """Copy the pinned broker jars into `libs/` once (Maven caches them in ~/.m2)."""
        stamp = self._libs / ".pom-stamp"
        pom = self.infra / "pom.xml"
        pom_text = pom.read_text()
        if stamp.exists() and stamp.read_text() == pom_text:
            return self._libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise KafkaSetupError(
                "Maven is needed once to fetch the Kafka broker jars: install it "
                "(`apt-get install maven`) or set FI_KAFKA_BOOTSTRAP to an existing cluster"
            )
        if self._libs.exists():
            shutil.rmtree(self._libs)
        self._libs.mkdir(parents=True)
        log.info("kafka_resolve_jars", pom=str(pom))
        proc = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             f"-Dfi.libs.dir={self._libs}"],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise KafkaSetupError(
                f"Maven could not resolve the Kafka jars (exit {proc.returncode}):\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        stamp.write_text(pom_text)
        return self._libs

    def _write_config(self) -> Path:
        text = render_properties(
            (self.infra / "server.properties.template").read_text(),
            {"port": self.port, "controller_port": self.controller_port,
             "data_dir": str(self.home / "data")},
            self.overrides,
        )
        if self.secure:
            files = self.secure_files
            make_tls(files.ca.parent)
            users = ensure_users(files.users, self.users)
            text += broker_properties(port=self.port, controller_port=self.controller_port,
                                      ca=files.ca, keystore=files.keystore,
                                      admin_password=users[ADMIN])
        path = self.home / "server.properties"
        path.write_text(text)
        return path

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [
            self._java(), f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", *JIT_OPTIONS,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.infra / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp", f"{self._libs}/*", main, *args,
        ]

    def _format_once(self, config: Path) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = self.cluster_id or uuid.uuid4().hex[:22]
        scram = scram_args(self.secure_files.passwords()) if self.secure else []
        proc = subprocess.run(
            self._java_cmd("kafka.tools.StorageTool", "format", "-t", cluster_id,
                           "-c", str(config), "--ignore-formatted", *scram),
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise KafkaSetupError(f"formatting Kafka storage failed:\n{proc.stdout}{proc.stderr}")

    # -- lifecycle --------------------------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        if self._child is not None and self._child.pid == pid:
            return pid if self._child.poll() is None else None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"kafka.Kafka" not in cmdline.read_bytes():
            return None  # the pid was reused by something else: the file is stale
        return pid

    def status(self) -> BrokerStatus:
        pid = self._read_pid()
        return BrokerStatus(running=pid is not None, pid=pid, bootstrap=self.bootstrap,
                            home=self.home)

    async def up(self, timeout: float = 90.0) -> BrokerStatus:
        """Start the broker unless it runs, then wait until the admin API answers."""
        if self._read_pid() is None:
            await asyncio.to_thread(self._launch)
        await self.wait_ready(timeout)
        return self.status()

    def _launch(self) -> None:
        """Resolve jars, format storage once, start the JVM detached (blocking: run in a thread)."""
        self._pid_file.unlink(missing_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.resolve_jars()
        config = self._write_config()
        self._format_once(config)
        with (self.home / "logs" / "stdout.log").open("ab") as out:
            self._child = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(config)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI that started it
            )
        self._pid_file.write_text(str(self._child.pid))
        log.info("kafka_starting", pid=self._child.pid, bootstrap=self.bootstrap)

    async def wait_ready(self, timeout: float) -> None:
        # Connection refusals are expected until the broker listens: keep them out of the log.
        client_log = logging.getLogger("aiokafka")
        level = client_log.level
        client_log.setLevel(logging.CRITICAL)
        try:
            await self._poll_ready(timeout)
        finally:
            client_log.setLevel(level)

    async def _poll_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._read_pid() is None:
                tail = self._log_tail()
                raise KafkaSetupError(f"the Kafka broker exited during start-up:\n{tail}")
            admin = AIOKafkaAdminClient(**self.client_kwargs(), request_timeout_ms=3000)
            try:
                await admin.start()
                await admin.describe_cluster()
                return
            except Exception as exc:  # not up yet: keep asking until the deadline
                last = exc
            finally:
                await admin.close()
            await asyncio.sleep(0.5)
        raise KafkaSetupError(
            f"Kafka at {self.bootstrap} not ready after {timeout:.0f}s ({last}):\n"
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        path = self.home / "logs" / "stdout.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def down(self, timeout: float = 30.0) -> bool:
        """SIGTERM (a controlled shutdown), SIGKILL after `timeout`. True if it was running."""
        pid = self._read_pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read_pid() is not None:
            time.sleep(0.2)
        if self._read_pid() is not None:
            log.warning("kafka_kill", pid=pid)
            os.kill(pid, signal.SIGKILL)
        self._pid_file.unlink(missing_ok=True)
        return True
