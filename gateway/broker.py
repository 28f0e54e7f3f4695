"""The approval broker: holds a command a `review` rule caught until a second person decides.

A protocol calls ``Broker.hold`` with the command and the deciding rule; the broker stores an
``ApprovalRecord`` (gateway/store.py), tells the caller through ``announce`` which request
to approve, notifies the webhooks, and waits. Approvals arrive through the admin API of any
instance sharing the store: the store's publish/subscribe (PostgreSQL LISTEN/NOTIFY, or local
calls for the embedded SQLite store) wakes the instance holding the command at once. A held
command ends approved, denied, expired (the rule's ``timeout``) or withdrawn (the caller went
away: cancelling ``hold`` withdraws the request).

``approve --for`` stores a grant: the same requester running a command with the same
fingerprint (gateway/approval.py) on the same target passes without a new request until it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.approval import FINAL, ApprovalError, ApprovalRecord, fingerprint, new_approval_id
from gateway.identity import groups_match, parse_duration
from policy.model import Decision
from recorder.capture import approval_decided, approval_requested

if TYPE_CHECKING:
    from gateway.config import Config, Rule
    from gateway.identity import Identity
    from gateway.metrics import Metrics
    from gateway.notify import Notifier
    from gateway.store import Store

log = logging.getLogger("wiregate.approvals")

# an approval window longer than this is refused: a standing grant is a rule change, not an approval
MAX_GRANT_S = 7 * 24 * 3600


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """How a held command ended. ``message`` is what a refused caller is told."""

    approved: bool
    record: ApprovalRecord | None = None
    # passed under an `approve --for` window, without a request: the id of the approval that granted it
    grant: str | None = None
    message: str = ""

    def decision(self, rule: str | None) -> Decision:
        """The policy decision the verdict turns the held command's ``review`` into."""
        if self.approved:
            return Decision(action="allow", rule=rule)
        return Decision(action="deny", rule=rule, message=self.message)


class Broker:
    def __init__(self, cfg: "Config", store: "Store", *, instance: str, metrics: "Metrics | None" = None,
                 notifier: "Notifier | None" = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.instance = instance
        self.metrics = metrics
        self.notifier = notifier
        self._clock = clock
        self._rules: dict[str, Rule] = {}
        self._approver_groups: tuple[str, ...] = ()
        self.reload(cfg)
        # request id -> the future its held command waits on (this instance's holds only)
        self._waiting: dict[str, asyncio.Future[ApprovalRecord]] = {}
        self._tasks: set[asyncio.Task] = set()
        # request id -> its last webhook delivery, which the next one waits for
        self._notifying: dict[str, asyncio.Task] = {}

    def reload(self, cfg: "Config") -> None:
        """The review rules of a new config; requests already held keep the approvers they were made with."""
        self._rules = {r.name: r for r in cfg.rules if r.action == "review"}
        self._approver_groups = tuple(dict.fromkeys(g for r in self._rules.values() for g in r.approvers))

    async def start(self) -> None:
        self.store.subscribe(self._published)
        expired = await self.store.expire_pending(self._clock())
        for record in expired:
            self._notify("decided", record)

    async def close(self) -> None:
        """Withdraw this instance's open requests (their commands die with it)."""
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        try:
            withdrawn = await self.store.withdraw_instance(self.instance, self._clock())
        except Exception as e:  # the store may be gone first at shutdown; the requests expire anyway
            log.warning("could not withdraw this instance's approval requests: %s", e)
            withdrawn = []
        for record in withdrawn:
            self._notify("decided", record)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    # ------------------------------------------------------------ the requester's side

    async def hold(self, *, requester: str, groups: Sequence[str], session_id: str | None, protocol: str,
                   target: str, kind: str, text: str, recorded: str, rule: str, args: dict[str, Any] | None = None,
                   announce: Callable[[ApprovalRecord], None] | None = None) -> Verdict:
        """Wait for a decision on a command ``rule`` sent to review.

        ``text`` is the command as the caller sent it (only its fingerprint is kept), ``recorded``
        as the recording holds it (masked; this is what approvers see). Cancelling the call
        withdraws the request.
        """
        review = self._rules.get(rule)
        if review is None:  # a reload removed the rule between the decision and here
            return Verdict(approved=False, message=f'wiregate: blocked by rule "{rule}": the rule no longer exists')
        now = self._clock()
        fp = fingerprint(kind, text, args)
        grant = await self.store.active_grant(requester, target, fp, now)
        if grant is not None:
            if self.metrics is not None:
                self.metrics.command(protocol, "granted")
            return Verdict(approved=True, grant=grant.approval_id)
        record = ApprovalRecord(
            id=new_approval_id(), requester=requester, groups=tuple(groups), target=target, protocol=protocol,
            kind=kind, command=recorded, fingerprint=fp, rule=rule, approvers=tuple(review.approvers),
            session_id=session_id, instance=self.instance, created=now, expires=now + parse_duration(review.timeout))
        future: asyncio.Future[ApprovalRecord] = asyncio.get_running_loop().create_future()
        self._waiting[record.id] = future
        try:
            await self.store.create_approval(record)
            log.info("approval %s: %s asks to run a %s command on %s (rule %s)", record.id, requester, kind,
                     target, rule)
            if announce is not None:
                announce(record)
            self._notify("requested", record)
            try:
                async with asyncio.timeout(record.expires - now):
                    final = await asyncio.shield(future)
            except TimeoutError:
                final = await self._end(record, "expired")
        except asyncio.CancelledError:
            await asyncio.shield(self._withdraw(record))
            raise
        finally:
            self._waiting.pop(record.id, None)
        waited = self._clock() - now
        if self.metrics is not None:
            self.metrics.approval_wait(waited, final.status)
            self.metrics.command(protocol, final.status)
        return Verdict(approved=final.status == "approved", record=final, message=refusal(final))

    async def _end(self, record: ApprovalRecord, status: str) -> ApprovalRecord:
        """Close a request this instance holds; when someone decided it first, that decision stands."""
        ended = await self.store.decide_approval(record.id, status=status, decided_by=None, decided_at=self._clock())
        if ended is None:
            ended = await self.store.get_approval(record.id) or msgspec.structs.replace(record, status=status)
        else:
            await self.store.publish(record.id)
            self._notify("decided", ended)
        return ended

    async def _withdraw(self, record: ApprovalRecord) -> None:
        try:
            ended = await self._end(record, "withdrawn")
            log.info("approval %s: withdrawn (%s)", record.id, ended.status)
        except Exception as e:
            log.warning("approval %s: could not be withdrawn: %s", record.id, e)

    def _published(self, approval_id: str) -> None:
        """A decision somewhere (this instance or another): wake the command it holds, if any."""
        ids = list(self._waiting) if approval_id == "*" else [approval_id] if approval_id in self._waiting else []
        for held in ids:
            self._spawn(self._wake(held))

    async def _wake(self, approval_id: str) -> None:
        record = await self.store.get_approval(approval_id)
        future = self._waiting.get(approval_id)
        if record is not None and record.status in FINAL and future is not None and not future.done():
            future.set_result(record)

    async def review(self, *, record: Callable[[Any], object] | None = None,
                     announce: Callable[[ApprovalRecord], None] | None = None, rule: str, **command: Any) -> Verdict:
        """``hold`` as every protocol uses it: the request and its outcome go to ``record`` (the
        session's recording), and a store that fails refuses the command, never runs it
        unapproved. Raises only ``CancelledError`` (which withdraws the request)."""
        def announced(request: ApprovalRecord) -> None:
            if record is not None:
                record(approval_requested(request))
            if announce is not None:
                announce(request)

        try:
            verdict = await self.hold(rule=rule, announce=announced, **command)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("approval for rule %s on %s failed: %s", rule, command.get("target"), e)
            return Verdict(approved=False, message=f'wiregate: blocked by rule "{rule}": this needs an approval '
                                                   "and the gateway could not request one; see its log")
        if record is not None and (verdict.record is not None or verdict.grant is not None):
            record(approval_decided(verdict))
        return verdict

    # ------------------------------------------------------------ the approver's side

    def may_approve(self, identity: "Identity") -> bool:
        return bool(self._approver_groups) and groups_match(identity.groups, self._approver_groups)

    async def list_requests(self, status: str | None = "pending") -> list[ApprovalRecord]:
        for record in await self.store.expire_pending(self._clock()):
            await self.store.publish(record.id)
            self._notify("decided", record)
        return await self.store.list_approvals(status=status)

    async def get(self, approval_id: str) -> ApprovalRecord:
        record = await self.store.get_approval(approval_id)
        if record is not None:
            return record
        found = await self.store.find_approvals(approval_id) if len(approval_id) >= 4 else []
        if len(found) == 1:
            return found[0]
        if found:
            raise ApprovalError(400, f"{approval_id!r} names {len(found)} requests; give more of the id")
        raise ApprovalError(404, f"no approval request {approval_id!r}")

    async def approve(self, approval_id: str, approver: "Identity", for_seconds: float | None = None) -> ApprovalRecord:
        if for_seconds is not None and not 0 < for_seconds <= MAX_GRANT_S:
            raise ApprovalError(400, "--for must be longer than 0s and at most 7d")
        record = await self._decidable(approval_id, approver)
        now = self._clock()
        grant_until = now + for_seconds if for_seconds is not None else None
        return await self._decide(record, approver, "approved", None, grant_until)

    async def deny(self, approval_id: str, approver: "Identity", reason: str | None = None) -> ApprovalRecord:
        record = await self._decidable(approval_id, approver)
        return await self._decide(record, approver, "denied", (reason or "").strip()[:500] or None, None)

    async def _decidable(self, approval_id: str, approver: "Identity") -> ApprovalRecord:
        record = await self.get(approval_id)
        if approver.name == record.requester:
            raise ApprovalError(403, f"{record.id}: nobody approves or denies their own request")
        if not groups_match(approver.groups, record.approvers):
            raise ApprovalError(403, f"{record.id}: {approver.name} is not an approver for rule {record.rule!r} "
                                f"(approvers: {', '.join(record.approvers)})")
        if record.status == "pending" and record.expires <= self._clock():
            record = await self._end(record, "expired")
        if record.status != "pending":
            raise ApprovalError(409, f"{record.id} is already {record.status}"
                                + (f" by {record.decided_by}" if record.decided_by else ""))
        return record

    async def _decide(self, record: ApprovalRecord, approver: "Identity", status: str, reason: str | None,
                      grant_until: float | None) -> ApprovalRecord:
        decided = await self.store.decide_approval(record.id, status=status, decided_by=approver.name,
                                                   decided_at=self._clock(), reason=reason, grant_until=grant_until)
        if decided is None:
            now = await self.store.get_approval(record.id)
            raise ApprovalError(409, f"{record.id} is already {now.status if now else 'gone'}")
        await self.store.publish(record.id)
        self._notify("decided", decided)
        return decided

    # ------------------------------------------------------------ background work

    def _notify(self, event: str, record: ApprovalRecord) -> None:
        """Webhooks of one request go out in order (a quick decision must not overtake its request)."""
        if self.notifier is None:
            return
        rule = self._rules.get(record.rule)
        before = self._notifying.get(record.id)
        task = self._spawn(self._send(before, event, record, rule.webhook if rule is not None else None))
        self._notifying[record.id] = task
        task.add_done_callback(lambda t, key=record.id: self._notifying.pop(key, None)
                               if self._notifying.get(key) is t else None)

    async def _send(self, before: asyncio.Task | None, event: str, record: ApprovalRecord, url: str | None) -> None:
        if before is not None:
            await asyncio.wait({before})
        await self.notifier.send(event, record, url)  # type: ignore[union-attr]

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def refusal(record: ApprovalRecord) -> str:
    """What the caller of a command whose request did not end approved is told."""
    head = f'wiregate: blocked by rule "{record.rule}": approval request {record.id}'
    if record.status == "denied":
        return f"{head} was denied by {record.decided_by}" + (f": {record.reason}" if record.reason else "")
    if record.status == "expired":
        return f"{head} timed out after {_span(record.expires - record.created)} without a decision"
    if record.status == "withdrawn":
        return f"{head} was withdrawn"
    return ""


def held_message(record: ApprovalRecord, url: str | None) -> str:
    """The one line a held caller sees: which request, who may approve it, and how."""
    how = f"wiregate approvals approve {record.id}"
    if url:
        how = f"WIREGATE_URL={url} {how}"
    return (f'wiregate: held for approval by rule "{record.rule}": request {record.id} waits up to '
            f"{_span(record.expires - record.created)} for one of {', '.join(record.approvers)} ({how})")


def _span(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"
