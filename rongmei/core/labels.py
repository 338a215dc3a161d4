"""What editors read: the Chinese names of states, delivery outcomes, reviewer roles and decisions.

One table per word family, shared by the CLI, the Prefect artifacts and the sign-off form, so a state is
called the same thing everywhere.
"""

from __future__ import annotations

from rongmei.core.states import DeliveryState, ItemState

__all__ = ["DECISION_ZH", "DELIVERY_ZH", "ROLE_ZH", "STATE_ZH"]

# Keyed by the states of rongmei.core.states (equal to, and looked up by, the strings the store holds).
STATE_ZH: dict[str, str] = {
    ItemState.in_review: "审核中",
    ItemState.returned: "已退回",
    ItemState.rejected: "已否决",
    ItemState.approved: "已签发",
    ItemState.published: "已发布",
    ItemState.retracted: "已撤稿",
    ItemState.superseded: "已被新版本取代",
    "scheduled": "定时待发",  # not a stored state: an approved version waiting for its publish_at
}
DELIVERY_ZH: dict[str, str] = {
    DeliveryState.pending: "待发",
    DeliveryState.in_progress: "发送中",
    DeliveryState.succeeded: "成功",
    DeliveryState.failed: "失败",
    DeliveryState.retrying: "重试中",
    DeliveryState.unconfirmed: "待确认",
    DeliveryState.draft_ready: "草稿已就绪",
    DeliveryState.skipped: "跳过",
    DeliveryState.refused: "拒绝（未经签发）",
}
ROLE_ZH = {"editor": "编辑（初审）", "desk_head": "部门主任（复审）", "chief_editor": "总编辑（终审）"}
DECISION_ZH = {"approve": "通过", "return": "退回修改", "reject": "不予采用"}
