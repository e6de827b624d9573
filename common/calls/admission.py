"""Admission: the one way a call is let in, whoever asks (the HTTP API, the campaign scheduler).

It decides, in this order, before anything is written:
1. Idempotency: a key already bound to a call answers with that call (another body: KeyReused).
2. The do-not-call list: a number on it is refused whatever the limits (retrying would not
   help), and before config.json is written (a refused call would become the seed's
   "latest" config there).
3. The live-call cap (CALLS_MAX_ACTIVE), checked before the rate, so calls the cap refuses
   never take a share of the rate.
4. The client's rate (CALLS_RATE_LIMIT_PER_MIN over the last minute), counting only calls
   that were placed.

Those checks are cheap reads, so a refused request costs no config write. The authoritative
check is repeated inside the transaction that records the call (`CallStore.create_call`), so
concurrent requests, on this server or others on the same database, never exceed a limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from common.calls.errors import KeyReused, OnDoNotCallList, RateLimited, TooManyLiveCalls
from common.calls.models import IdempotencyClaim, StoredAnswer
from common.settings import Settings
from common.storage.base import AdmissionLimits, CallStore, Refusal


@dataclass(frozen=True)
class Placement:
    """Who asks for a call, and under which Idempotency-Key (if any)."""

    client: str
    claim: IdempotencyClaim | None = None


def refusal_error(
    refusal: Refusal, limits: AdmissionLimits
) -> TooManyLiveCalls | RateLimited | OnDoNotCallList:
    if refusal.limit == "dnc":
        return OnDoNotCallList()
    if refusal.limit == "live":
        return TooManyLiveCalls(limits.max_live, refusal.retry_after_s)
    return RateLimited(limits.per_minute, refusal.retry_after_s)


class Admission:
    def __init__(
        self, store: CallStore, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._clock = clock
        self.limits = AdmissionLimits(
            max_live=settings.calls_max_active, per_minute=settings.calls_rate_limit_per_min
        )

    async def check(self, placement: Placement, number: str) -> StoredAnswer | None:
        """What the key is bound to (None: place a new call to `number`), or raise the
        refusal."""
        if placement.claim is not None:
            bound = await self.bound(placement.claim)
            if bound is not None:
                return bound
        refusal = await self._store.admission_refusal(
            placement.client, self.limits, self._clock(), number
        )
        if refusal is not None:
            raise refusal_error(refusal, self.limits)
        return None

    async def bound(self, claim: IdempotencyClaim) -> StoredAnswer | None:
        """The call `claim`'s key is bound to, if any; KeyReused if with another body."""
        stored = await self._store.get_idempotent(claim.client, claim.key)
        return None if stored is None else self.verify(stored, claim)

    @staticmethod
    def verify(stored: StoredAnswer, claim: IdempotencyClaim) -> StoredAnswer:
        if not claim.matches(stored.request_hash):
            raise KeyReused
        return stored

    async def remember(
        self, claim: IdempotencyClaim, call_id: str, status: int, body: dict[str, object]
    ) -> None:
        """The answer given under the key about `call_id`, replayed to the key's retries (not
        stored if the key is bound to another call by now)."""
        await self._store.answer_idempotent(claim.client, claim.key, call_id, status, body)
