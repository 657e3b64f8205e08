"""A device with a standard MQTT client (paho-mqtt, MQTT 5): it publishes a
reading every ``--interval`` seconds, writes a log line, and answers a
service call — what ``POST /v1/sites/{site}/call/{topic}`` asks it.

    PLANTD_MQTT_HOST=127.0.0.1 PLANTD_MQTT_PORT=1883 \\
    PLANTD_DEVICE_ID=<client id> PLANTD_DEVICE_TOKEN=<its access token> \\
        python device_paho.py --telemetry line1/pump/temp --log-source line1-pump --service line1/pump/status

The device needs publish grants on the telemetry topic and
``$plantd/log/<source>`` and a subscribe grant on the service topic
(``POST /v1/devices``). The edge sends a call as an MQTT 5 request: the
answer goes to its Response Topic with its Correlation Data.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--telemetry", default="sdk/pump/temp", help="topic of the readings")
    p.add_argument("--log-source", default="sdk-pump", help="log lines go to $plantd/log/<source>")
    p.add_argument("--service", default="sdk/pump/svc/status", help="topic of the service it answers")
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args()
    client_id = os.environ["PLANTD_DEVICE_ID"]
    ready = threading.Event()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    device.username_pw_set(client_id, os.environ["PLANTD_DEVICE_TOKEN"])

    def on_connect(c: mqtt.Client, _: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, props: Properties | None) -> None:
        if reason.is_failure:
            print(f"refused: {reason}", file=sys.stderr, flush=True)
            stop.set()
            return
        c.subscribe(args.service, qos=1)

    def on_subscribe(c: mqtt.Client, _: Any, mid: int, reasons: list[ReasonCode], props: Properties | None) -> None:
        if any(r.is_failure for r in reasons):
            print(f"subscription refused: {reasons}", file=sys.stderr, flush=True)
            stop.set()
            return
        line = {"level": "info", "msg": "pump started", "service": args.service}
        c.publish(f"$plantd/log/{args.log_source}", json.dumps(line), qos=1)
        ready.set()

    def on_message(c: mqtt.Client, _: Any, msg: mqtt.MQTTMessage) -> None:
        request = msg.properties
        reply_to = getattr(request, "ResponseTopic", None)
        if not reply_to:
            return  # not a request
        answer = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # untyped in paho
        correlation = getattr(request, "CorrelationData", None)
        if correlation is not None:
            answer.CorrelationData = correlation
        answer.ContentType = "application/json"
        body = {"running": True, "asked": msg.payload.decode("utf-8", "replace")}
        c.publish(reply_to, json.dumps(body), qos=1, properties=answer)

    device.on_connect = on_connect
    device.on_subscribe = on_subscribe
    device.on_message = on_message
    device.connect(os.environ.get("PLANTD_MQTT_HOST", "127.0.0.1"), int(os.environ.get("PLANTD_MQTT_PORT", "1883")))
    device.loop_start()
    try:
        if not ready.wait(15):
            print("not connected within 15 s", file=sys.stderr, flush=True)
            return 1
        if stop.is_set():
            return 1
        print("ready", flush=True)
        reading = 20.0
        while not stop.is_set():
            reading = round(reading + 0.1, 1)
            device.publish(args.telemetry, str(reading), qos=1)
            stop.wait(args.interval)
        time.sleep(0.1)
        return 0
    finally:
        device.disconnect()
        device.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
