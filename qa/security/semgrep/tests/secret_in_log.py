"""semgrep --test cases for secret-in-log."""

import logging

log = logging.getLogger(__name__)
api_key = "sk-not-a-real-key"
password = "hunter2"
n_tokens = 3
# ruleid: secret-in-log
log.info("key %s", api_key)
# ruleid: secret-in-log
log.debug(f"using {password}")
# ruleid: secret-in-log
print(api_key)
# ok: secret-in-log
log.info("request used %d tokens", n_tokens)
# ok: secret-in-log
log.info("api key set: %s", bool(api_key))
