"""What editors read: the Chinese names of states, delivery outcomes, reviewer roles and decisions.

One table per word family, shared by the CLI, the Prefect artifacts and the sign-off form, so a state is
called the same thing everywhere.
"""

from __future__ import annotations

__all__ = ["DECISION_ZH", "DELIVERY_ZH", "ROLE_ZH", "STATE_ZH"]

STATE_ZH = {
    "in_review": "审核中",
    "returned": "已退回",
    "rejected": "已否决",
    "approved": "已签发",
    "published": "已发布",
    "retracted": "已撤稿",
    "superseded": "已被新版本取代",
    "scheduled": "定时待发",
}
DELIVERY_ZH = {
    "pending": "待发",
    "in_progress": "发送中",
    "succeeded": "成功",
    "failed": "失败",
    "retrying": "重试中",
    "unconfirmed": "待确认",
    "draft_ready": "草稿已就绪",
    "skipped": "跳过",
    "refused": "拒绝（未经签发）",
}
ROLE_ZH = {"editor": "编辑（初审）", "desk_head": "部门主任（复审）", "chief_editor": "总编辑（终审）"}
DECISION_ZH = {"approve": "通过", "return": "退回修改", "reject": "不予采用"}
