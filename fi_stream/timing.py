"""The timing contracts between the services, derived from one setting, `timing.grace_ms`
(G, default 5 s): how long past a query's deadline each party keeps waiting for it.

- **The aggregator** (`lag_grace_ms` = G): a query falls due at its deadline, but responses
  written before the deadline may still sit unread in a lagging responses partition. The
  aggregator defers such a query until it has caught up, at most G past the deadline; then
  it emits what it has.
- **The audit** (`audit_grace_ms` = 2 G): a query without a result counts as missing only
  once the log reaches G past the aggregator's limit — the aggregator's grace, then as much
  again for the emit itself, the transaction's commit and a slow poll. Less would report
  results the aggregator was still allowed to write as missing.
- **The query client** (`result_grace_ms` = 3 G): a client gives up on a result (raises
  `ResultTimeoutError`) one G after the audit would call it missing, for the result to
  travel to the client. Less would give up on results the system still counts as on time.

So the three keep their order, aggregator < audit < client, whatever G is: one setting to
change, not three constants that agree only by comment. Light on purpose (pydantic only):
the CLI reads the defaults at import.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TimingSettings(BaseModel):
    """`[timing]` of the settings (FI_TIMING__GRACE_MS)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: G: how long past its deadline the aggregator waits for a lagging responses partition.
    grace_ms: int = Field(default=5_000, ge=0)

    @property
    def lag_grace_ms(self) -> int:
        """The aggregator emits a due query after at most this much past its deadline."""
        return self.grace_ms

    @property
    def audit_grace_ms(self) -> int:
        """The audit counts a result missing once the log is this far past the deadline."""
        return 2 * self.grace_ms

    @property
    def result_grace_ms(self) -> int:
        """The query client waits for a result this long past the deadline."""
        return 3 * self.grace_ms


#: The contracts at the default setting, for module-level defaults (CLI options).
DEFAULT_TIMING = TimingSettings()
#: consumers/aggregator.py: emit a due query even if the responses partition lags, after this.
MAX_LAG_GRACE_MS = DEFAULT_TIMING.lag_grace_ms
#: fi_stream.audit (and `fi-stream audit --grace-ms`): a result may lag its deadline this much.
AUDIT_GRACE_MS = DEFAULT_TIMING.audit_grace_ms
#: producers.query_client: how long after its deadline a result may take to arrive.
RESULT_GRACE_MS = DEFAULT_TIMING.result_grace_ms
