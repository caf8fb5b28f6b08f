"""Installs om-teach's offline guard in every Python process started with OM_TEACH_OFFLINE=1."""

import os

if os.environ.get("OM_TEACH_OFFLINE") == "1":
    from om_teach.offline import install

    install()
