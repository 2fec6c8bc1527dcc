"""Enables the device import blocker at interpreter start when ZSVR_DEVICE_SIM=1 (bench only).

Use: ``ZSVR_DEVICE_SIM=1 ZSVR_DEVICE_SITE=<wheel folder> PYTHONPATH=bench/device:<wheel folder> python ...``
(see import_blocker.py). Without the variable this file does nothing.
"""

import os

if os.environ.get("ZSVR_DEVICE_SIM") == "1":
    import import_blocker

    import_blocker.install()
