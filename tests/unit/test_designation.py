"""backup_from: which node backs up, from the replication state it sees."""
import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands.backup import designation
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.options import resolve


def settings(mode, bound=300):
    return resolve({"backup_from": mode, "standby_max_lag": bound}, environ={})


PRIMARY_ALONE = {"role": "primary", "standbys": []}
PRIMARY_WITH_HEALTHY = {"role": "primary", "standbys": [
    {"name": "pg2", "address": "10.0.0.2", "state": "streaming", "lag": 1.0}]}
PRIMARY_WITH_LAGGING = {"role": "primary", "standbys": [
    {"name": "pg2", "address": "10.0.0.2", "state": "streaming", "lag": 200.0}]}
STANDBY_HEALTHY = {"role": "standby", "receiver": "streaming", "lag": 2.0}
STANDBY_BEHIND = {"role": "standby", "receiver": "streaming", "lag": 900.0}
STANDBY_DISCONNECTED = {"role": "standby", "receiver": None, "lag": None}


@pytest.mark.parametrize("mode, state, backs_up, says", [
    ("primary", PRIMARY_ALONE, True, None),
    ("primary", STANDBY_HEALTHY, False, "the primary backs up"),
    ("standby", PRIMARY_WITH_HEALTHY, False, "a standby backs up"),
    ("standby", STANDBY_HEALTHY, True, None),
    ("standby", STANDBY_BEHIND, False, "replay lag 900 s"),
    ("prefer-standby", PRIMARY_WITH_HEALTHY, False, "standby pg2 (10.0.0.2)"),
    ("prefer-standby", PRIMARY_ALONE, True, None),
    # the primary counts a standby healthy only below half the bound: both may back up
    # (the lease serialises them) but never neither
    ("prefer-standby", PRIMARY_WITH_LAGGING, True, None),
    ("prefer-standby", STANDBY_HEALTHY, True, None),
    ("prefer-standby", STANDBY_BEHIND, False, "the primary backs up"),
    ("prefer-standby", STANDBY_DISCONNECTED, False, "WAL receiver not running"),
])
def test_designation(mode, state, backs_up, says):
    reason = designation(settings(mode), state)
    assert (reason is None) == backs_up, reason
    if says:
        assert says in reason
