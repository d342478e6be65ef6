"""What Harken's own tests share: the `harken` command as a subprocess, a private
Prosody and XMPP people, real HTTP services for the ops commands, the crash-test writer.

Test support, not part of Harken: nothing here ships in the package. Tests import it as
`support.<module>` (pytest puts `tests/` on the path), benchmarks as
`tests.support.<module>` (run from the checkout).
"""
