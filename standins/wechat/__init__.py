"""A local stand-in of the WeChat Official Account API (公众号), over real HTTP on 127.0.0.1 (issue 4).

It implements what `publishers.wechat` uses, with the documented request checks and error codes
(`shared/reference/wechat-api.md`): token lifecycle (stable_token and the legacy /cgi-bin/token), IP
whitelist (40164), multipart checks (41005), image type/size (40005/40009), thumb ids (40007), length limits
(45003 title, 45004 digest, 45110 author, 45002 content), `\\uXXXX` escapes (40033), external images stripped
from stored content, per-endpoint daily quotas (45009), unverified accounts (48001 on freepublish/*),
publish status 1 -> 0 (or 2/3/4/6 on request), delete -> 5, batchget, getarticle and datacube statistics.

Assumptions where the documentation is silent (kept in one place so they are easy to revisit):
- the title limit is the documented 32 characters (users report 64 works; 32 is the safe side), the digest
  limit the documented 128;
- freepublish/submit consumes the draft (it leaves the draft box), and batchget lists only articles whose
  publishing finished successfully;
- getarticletotaldetail's detail_list holds cumulative values per stat_date.

Inspection and fault switches (not part of WeChat):
    GET  /_standin/state    drafts, publishes, articles (with their HTML), images, calls, tokens, faults
    POST /_standin/faults   merge switches, e.g. {"unverified": true, "quota": {"freepublish/get": 0}}
    POST /_standin/reset    forget everything
    POST /_standin/stats    {"article_id": ..., "read_user": 12, "share_user": 3, "like_user": 2, "ref_date": ...}
Switches: ip_whitelist (bool), unverified (bool), token_expire_now (one-shot), token_expire_after_calls (int,
one-shot), expires_in (int), quota ({endpoint: per-day limit}), submit_delay (seconds to sleep *after* the
submit took effect, to make a client time out), publish_outcome (0/2/3/4/6), publish_gets (freepublish/get
calls until the outcome shows), publish_seconds (or this much time), title_limit (int).

The package: `state` (the fake account and its faults), `endpoints` (the API by area), `server` (HTTP and
`start_standin`). Run it alone: `python -m standins.wechat --port 8801`.
"""

from standins.wechat.server import StandIn, start_standin
from standins.wechat.state import WeChatState

__all__ = ["StandIn", "WeChatState", "start_standin"]
