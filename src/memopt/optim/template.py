"""The declarative state template (see :mod:`memopt.state.template`, where it lives so that estimators can
declare their state too); re-exported here for optimizers built on :class:`memopt.optim.base.MemoptBase`."""

from memopt.state.template import PARAM, StateSlot, create_state, like_param, raw, slot_format

__all__ = ["PARAM", "StateSlot", "create_state", "like_param", "raw", "slot_format"]
