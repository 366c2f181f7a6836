"""semgrep --test cases for tls-verify-disabled."""

import ssl
from typing import Any

import httpx
import requests

url = "https://teacher.example/v1"
# ruleid: tls-verify-disabled
r1 = requests.get(url, verify=False, timeout=5)
# ruleid: tls-verify-disabled
r2 = httpx.post(url, json={}, verify=False, timeout=5)
# ruleid: tls-verify-disabled
client = httpx.Client(verify=False, timeout=5)
# ruleid: tls-verify-disabled
aclient = httpx.AsyncClient(timeout=5, verify=False)
session = requests.Session()
# ruleid: tls-verify-disabled
session.verify = False
# ruleid: tls-verify-disabled
r3 = session.get(url, verify=False, timeout=5)
# ruleid: tls-verify-disabled
options: dict[str, Any] = {"verify": False, "timeout": 5}
r4 = requests.request("GET", url, **options)
# ruleid: tls-verify-disabled
ctx = ssl._create_unverified_context()
ctx2 = ssl.create_default_context()
# ruleid: tls-verify-disabled
ctx2.check_hostname = False
# ruleid: tls-verify-disabled
ctx2.verify_mode = ssl.CERT_NONE
# ok: tls-verify-disabled
r5 = requests.get(url, timeout=5)
# ok: tls-verify-disabled
r6 = requests.get(url, verify="ca.pem", timeout=5)
# ok: tls-verify-disabled
client2 = httpx.Client(verify=ssl.create_default_context(cafile="ca.pem"), timeout=5)
# ok: tls-verify-disabled
client3 = httpx.Client(verify=True, timeout=5)
