"""semgrep --test cases for http-call-without-timeout."""

import urllib.request

import httpx
import requests

url = "http://127.0.0.1:8000/v1"
# ruleid: http-call-without-timeout
r1 = requests.get(url)
# ruleid: http-call-without-timeout
r2 = httpx.post(url, json={})
# ruleid: http-call-without-timeout
client = httpx.Client()
# ruleid: http-call-without-timeout
r3 = urllib.request.urlopen(url)
# ok: http-call-without-timeout
r4 = requests.get(url, timeout=10)
# ok: http-call-without-timeout
client2 = httpx.Client(timeout=httpx.Timeout(10.0))
# ok: http-call-without-timeout
r5 = urllib.request.urlopen(url, timeout=5)
