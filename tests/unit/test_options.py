"""options.resolve: defaults, precedence, coercion and the errors people see."""
import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import ConfigError


def write(path, text):
    path.write_text(text)
    return str(path)


def test_defaults_come_from_options():
    s = options.resolve(environ={})
    for option in options.OPTIONS:
        assert getattr(s, option.name) == option.default, option.name


def test_every_option_is_declared_once_and_well_formed():
    names = [o.name for o in options.OPTIONS]
    assert len(names) == len(set(names))
    for o in options.OPTIONS:
        assert o.kind in ("str", "int", "bool", "path", "dict", "list"), o.name
        assert o.help and o.help.endswith("."), o.name
        if o.choices:
            assert o.default is None or o.default in o.choices, o.name
        if o.secret:
            assert o.default is None, o.name


def test_precedence_default_config_credentials_env_explicit(tmp_path):
    config = write(tmp_path / "pgdr.conf",
                   "[pgdr]\ncluster = fromconfig\ns3_region = eu-1\nworkers = 2\n"
                   "s3_bucket = b-config\n")
    creds = write(tmp_path / "creds.conf", "[pgdr]\ns3_secret_key = sekret\nworkers = 3\n")
    env = {"PGDR_WORKERS": "5", "PGDR_S3_BUCKET": "b-env"}
    s = options.resolve(explicit={"s3_bucket": "b-explicit", "cluster": None},
                        config_file=config, credentials_file=creds, environ=env)
    assert s.cluster == "fromconfig"        # explicit None does not hide the file
    assert s.s3_region == "eu-1"            # config over default
    assert s.s3_secret_key == "sekret"      # credentials file
    assert s.workers == 5                   # environment over both files
    assert s.s3_bucket == "b-explicit"      # explicit over everything
    assert s.compression == "zstd"          # default


@pytest.mark.parametrize("text,expected", [
    ("yes", True), ("On", True), ("1", True), ("true", True),
    ("no", False), ("OFF", False), ("0", False), (False, False),
])
def test_bool_words(text, expected):
    assert options.resolve({"force": text}, environ={}).force is expected


def test_int_and_dict_and_path_coercion(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = options.resolve({"workers": "7", "settings": "port=5433, work_mem = 64MB",
                         "target": "restored"}, environ={})
    assert s.workers == 7
    assert s.settings == {"port": "5433", "work_mem": "64MB"}
    assert s.target == str(tmp_path / "restored")  # paths are made absolute
    assert options.resolve({"tablespace_map": {"ts": 1}}, environ={}).tablespace_map == {"ts": "1"}


@pytest.mark.parametrize("explicit,fragment", [
    ({"workers": "many"}, "workers='many' is not a valid int"),
    ({"workers": -1}, "workers=-1 is out of range: expected an integer from 1 to 256"),
    ({"force": "maybe"}, "force='maybe' is not a valid bool"),
    ({"compression": "lz4"}, "is not one of: zstd, gzip, none"),
    ({"settings": "port"}, "is not a valid dict"),
    ({"cluster": "../etc"}, "not a valid cluster name"),
    ({"cluster": ".hidden"}, "not a valid cluster name"),
    ({"nonsense": 1}, "unknown setting 'nonsense'"),
])
def test_invalid_values_name_the_option(explicit, fragment):
    with pytest.raises(ConfigError) as info:
        options.resolve(explicit, environ={})
    assert fragment in info.value.msg
    assert info.value.code == "config_invalid"
    assert info.value.stage == "config"


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        options.resolve(config_file=str(tmp_path / "absent.conf"), config_required=True,
                        environ={})
    assert info.value.code == "config_missing"
    # an absent optional file is no error
    assert options.resolve(config_file=str(tmp_path / "absent.conf"), environ={}).cluster is None
    bad = write(tmp_path / "bad.conf", "[pgdr]\ns3_bukket = x\n")
    with pytest.raises(ConfigError) as info:
        options.resolve(config_file=bad, environ={})
    assert "unknown key(s) s3_bukket" in info.value.msg


def test_settings_are_read_only_redacted_and_require():
    s = options.resolve({"s3_secret_key": "sekret", "cluster": "main"}, environ={})
    with pytest.raises(AttributeError):
        s.cluster = "other"
    assert s.redacted()["s3_secret_key"] == "********"
    assert s.redacted()["s3_access_key"] is None
    assert s.replace(cluster="other").cluster == "other"
    with pytest.raises(ConfigError) as info:
        s.require("cluster", "s3_bucket", "target")
    assert "s3_bucket, target" in info.value.msg and info.value.code == "config_missing"
