"""`python -m standins.wechat`: the stand-in alone, in the foreground (see standins.wechat.server.main)."""

from standins.wechat.server import main

main()
