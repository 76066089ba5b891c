"""A rule's steps at run time: each op of the program has its handler (Home Assistant's
script engine dispatches the same way); an instance runs from its position until it waits
or ends. The Engine (engine/core/runner.py) starts instances and moves them on events,
timers and provider answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.clock import parse_time
from engine.core import journey
from engine.core.cascade import Cascade
from engine.core.context import context
from engine.core.model import Instance, Record, UserState
from engine.core.policies import Policies
from engine.core.variants import cascade_of
from engine.core.waits import Deferred, Waiting, WaitingFor, WaitState
from engine.core.workspace import Failure, Workspace
from engine.errors import ExpressionError
from engine.lang.expressions import Expression
from engine.lang.localtime import next_local_time
from engine.lang.program import BranchOp, JumpOp, Op, SendOp, StopOp, WaitForOp, WaitOp
from engine.lang.rules import Rule
from engine.lang.ruleset import RuleSet

# An op handler runs one step; True: go on with the next op, False: the instance waits or
# has ended.
Handler = Callable[[Workspace, UserState, Instance, Rule, Any, dict[str, Any]], bool]


class Steps:
    """The run-time half of the Engine: ops, failures, endings."""

    rules: RuleSet
    versions: dict[tuple[str, str], Rule]
    cascade: Cascade
    policies: Policies

    def __init__(self) -> None:
        self._ops: dict[type[Any], Handler] = {
            WaitOp: self._op_wait,
            SendOp: self._op_send,
            WaitForOp: self._op_wait_for,
            BranchOp: self._op_branch,
            JumpOp: self._op_jump,
            StopOp: self._op_stop,
        }

    def _rule_of(self, inst: Instance) -> Rule | None:
        return self.versions.get((inst.rule_id, inst.rule_version)) or self.rules.rules.get(
            inst.rule_id
        )

    # -- failures --------------------------------------------------------------------------

    def _test(
        self,
        ws: Workspace,
        expr: Expression,
        ctx: dict[str, Any],
        rule: Rule,
        where: str,
        st: UserState,
    ) -> bool:
        """A condition that cannot be evaluated is false; the rule keeps running."""
        try:
            return expr.test(ctx)
        except ExpressionError as exc:
            self._fail(ws, rule.id, "expression_error", where, str(exc), st, ctx)
            return False

    @staticmethod
    def _fail(
        ws: Workspace,
        rule: str,
        kind: str,
        where: str,
        message: str,
        st: UserState,
        ctx: dict[str, Any] | None = None,
        *,
        stopped: bool = False,
    ) -> None:
        event = (ctx or {}).get("event")
        event_id = event.get("id") if isinstance(event, dict) else None
        ws.errors.append(Failure(rule, kind, where, message, st.user_id, event_id, stopped))

    # -- running ---------------------------------------------------------------------------

    def _run(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, event: dict[str, Any]
    ) -> None:
        """Execute ops from inst.pc until the instance waits or ends."""
        program, ops = rule.program, self._ops
        while inst.active:
            if inst.pc >= len(program):
                self.end(ws, st, inst, "completed")
                return
            op: Op = program[inst.pc]
            # Each pass comes to a new position: a wait or a send is resumed at the next op.
            if type(op) is not JumpOp:
                ws.journey(rule.id, op.path, journey.REACHED)
            if not ops[type(op)](ws, st, inst, rule, op, event):
                return

    def _wait(self, ws: Workspace, inst: Instance, state: WaitState, due: float | None) -> bool:
        inst.state, inst.due_at = state, due
        ws.save_instance(inst)
        return False

    def _op_wait(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: WaitOp, event: Any
    ) -> bool:
        due = ws.now + op.delay_s
        if op.until is not None:
            ctx = context(ws.now, st, event, inst.trigger)
            try:
                text = op.until.render(ctx)
            except ExpressionError as exc:
                return self._error(ws, st, inst, rule, op.path, "expression_error", str(exc), ctx)
            try:
                due = parse_time(text) + op.offset_s + op.delay_s
            except ValueError:
                detail = f"wait.until: '{text[:100]}' is not an ISO 8601 time"
                return self._error(ws, st, inst, rule, op.path, "invalid_time", detail, ctx)
        if op.at is not None:
            due = next_local_time(max(due, ws.now), op.at, self.policies.zone(st, ws))
        if due > ws.now:
            return self._wait(ws, inst, Waiting(), due)
        inst.pc += 1
        return True

    def _op_send(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: SendOp, event: Any
    ) -> bool:
        if not self.cascade.send(ws, st, inst, rule, op, 0, event=event):
            return False
        inst.pc += 1
        return True

    def _op_wait_for(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: WaitForOp, event: Any
    ) -> bool:
        return self._wait(
            ws, inst, WaitingFor(), None if op.timeout_s is None else ws.now + op.timeout_s
        )

    def _op_branch(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: BranchOp, event: Any
    ) -> bool:
        ctx = context(ws.now, st, event, inst.trigger)
        ok = self._test(ws, op.cond, ctx, rule, f"step {op.path} if", st)
        ws.journey(rule.id, op.path, journey.THEN if ok else journey.ELSE)
        inst.pc = inst.pc + 1 if ok else op.else_pc
        return True

    def _op_jump(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: JumpOp, event: Any
    ) -> bool:
        inst.pc = op.target
        return True

    def _op_stop(
        self, ws: Workspace, st: UserState, inst: Instance, rule: Rule, op: StopOp, event: Any
    ) -> bool:
        self.end(ws, st, inst, "completed", reason="stop")
        return False

    def _error(
        self,
        ws: Workspace,
        st: UserState,
        inst: Instance,
        rule: Rule,
        step: str,
        kind: str,
        detail: str,
        ctx: dict[str, Any],
    ) -> bool:
        """Bad data stopped the instance: it ends as `error`, visibly (timeline, records,
        the processor's log line and metric)."""
        self._fail(ws, rule.id, kind, f"step {step}", detail, st, ctx, stopped=True)
        ws.records.append(
            Record(ws.now, rule.id, st.user_id, step, None, None, inst.variant, "error", kind)
        )
        self.end(ws, st, inst, "error", reason=f"step {step}: {detail}")
        return False

    def end(
        self, ws: Workspace, st: UserState, inst: Instance, status: str, reason: str | None = None
    ) -> None:
        """End an instance: cancel its timer and anything it had not sent yet."""
        state = inst.state
        rule = self._rule_of(inst)
        if isinstance(state, Deferred) and rule is not None:
            op = rule.program[inst.pc]
            if isinstance(op, SendOp):
                channel = cascade_of(op, inst)[state.idx].channel
                self.cascade.skip(ws, st, inst, rule, op, channel, None, "exited")
        for message in st.messages:
            if message.instance_id == inst.id and message.status == "queued":
                message.status, message.reason = "cancelled", "exited"
                ws.save_message(message)
        at = rule.program[inst.pc].path if rule is not None and inst.pc < len(rule.program) else ""
        ws.journey(inst.rule_id, at, journey.END + status)
        inst.status, inst.ended_at, inst.end_reason = status, ws.now, reason
        inst.due_at, inst.state = None, None
        if inst in st.instances:
            st.instances.remove(inst)
        ws.ended[(inst.rule_id, status)] += 1
        ws.save_instance(inst)
