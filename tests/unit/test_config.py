import base64
import os
import subprocess
import sys

import pytest

from braid.config import ConfigError, load_client, load_gateway

KEY = base64.b64encode(os.urandom(32)).decode()

CLIENT = f'''[client]
private_key = "{KEY}"
address = "10.77.0.2/24"
[gateway]
public_key = "{KEY}"
endpoint = "192.0.2.1:7000"
[[link]]
name = "fibre"
bind = "eth1"
sockets = 2
[[link]]
name = "lte"
bind = "192.168.8.2"
'''

GATEWAY = f'''[gateway]
private_key = "{KEY}"
listen = "[::]:7000"
address = ["10.77.0.1/24", "fd77::1/64"]
[[client]]
name = "site-a"
public_key = "{KEY}"
address = "10.77.0.2/32"
'''


def _write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_client_and_gateway(tmp_path):
    c = load_client(_write(tmp_path, CLIENT))
    assert [link.name for link in c.links] == ["fibre", "lte"]
    assert c.links[0].sockets == 2
    assert c.endpoints == (("192.0.2.1", 7000),)
    assert c.warmup and not load_client(_write(tmp_path, CLIENT.replace(
        'address = "10.77.0.2/24"', 'address = "10.77.0.2/24"\nwarmup = false'))).warmup
    g = load_gateway(_write(tmp_path, GATEWAY, "g.toml"))
    assert g.listen == ("::", 7000)
    assert len(g.addresses) == 2


@pytest.mark.parametrize(("change", "key", "reason"), [
    (('sockets = 2', 'sockets = 0'), "link[0].sockets", "between 1 and 16"),
    (('endpoint = "192.0.2.1:7000"', 'endpoint = "192.0.2.1:99999"'), "gateway.endpoint", "out of range"),
    (('address = "10.77.0.2/24"', 'address = "10.77.0.300/24"'), "client.address", "not an address"),
    ((f'private_key = "{KEY}"', 'private_key = "abc"'), "client.private_key", "base64"),
    (('name = "lte"', 'name = "fibre"'), "link[1].name", "duplicate"),
    (('sockets = 2', 'sockets = "two"'), "link[0].sockets", "must be int"),
    (('address = "10.77.0.2/24"', 'address = "10.77.0.2/24"\nwarmup = 0'), "client.warmup", "must be bool"),
])
def test_client_errors_name_file_line_and_key(tmp_path, change, key, reason):
    path = _write(tmp_path, CLIENT.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_client(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:"), msg
    assert f" {key}: " in msg and reason in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize(("change", "message"), [
    (('bind = "eth1"', 'bnid = "eth1"'), "{path}:{line}: link[0]: unknown key 'bnid' (did you mean 'bind'?)"),
    (('endpoint = "192', 'endpiont = "192'),
     "{path}:{line}: gateway: unknown key 'endpiont' (did you mean 'endpoint'?)"),
    (('sockets = 2', 'sockets = 2\nspeed = 3'), "{path}:{line}: link[0]: unknown key 'speed'"),
    (('[gateway]', '[gatway]'), "{path}:{line}: top level: unknown key 'gatway' (did you mean 'gateway'?)"),
])
def test_a_typo_is_named_where_it_is(tmp_path, change, message):
    text = CLIENT.replace(*change)
    path = _write(tmp_path, text)
    typo = change[1].splitlines()[-1]
    line = text.splitlines().index(typo) + 1 if typo in text.splitlines() else \
        next(i for i, s in enumerate(text.splitlines(), 1) if s.startswith(typo))
    with pytest.raises(ConfigError) as info:
        load_client(path)
    assert str(info.value) == message.format(path=path, line=line)


def test_a_missing_key_names_its_table_and_the_table_line(tmp_path):
    text = CLIENT.replace('bind = "192.168.8.2"\n', "")
    path = _write(tmp_path, text)
    header = [i for i, s in enumerate(text.splitlines(), 1) if s == "[[link]]"][1]
    with pytest.raises(ConfigError) as info:
        load_client(path)
    assert str(info.value) == f"{path}:{header}: link[1]: missing key 'bind'"


def test_several_endpoints(tmp_path):
    text = CLIENT.replace('endpoint = "192.0.2.1:7000"',
                          'endpoints = ["192.0.2.1:7000", "[2001:db8::1]:7001", "gw.example"]')
    c = load_client(_write(tmp_path, text))
    assert c.endpoints == (("192.0.2.1", 7000), ("2001:db8::1", 7001), ("gw.example", 7000))


@pytest.mark.parametrize(("value", "reason"), [
    ('endpoints = []', "list of 1-8"),
    ('endpoints = ["192.0.2.1:7000", "192.0.2.1:7000"]', "twice"),
    ('endpoints = ["192.0.2.1:70000"]', "out of range"),
    ('endpoint = "192.0.2.1:7000"\nendpoints = ["192.0.2.2:7000"]', "not both"),
])
def test_bad_endpoints_name_the_key(tmp_path, value, reason):
    path = _write(tmp_path, CLIENT.replace('endpoint = "192.0.2.1:7000"', value))
    with pytest.raises(ConfigError) as info:
        load_client(path)
    assert "gateway.endpoints" in str(info.value) and reason in str(info.value), str(info.value)


def test_a_bad_endpoint_is_reported_once(tmp_path):
    path = _write(tmp_path, CLIENT.replace('endpoint = "192.0.2.1:7000"', 'endpoint = 7000'))
    with pytest.raises(ConfigError) as info:
        load_client(path)
    assert str(info.value).count("gateway.endpoint") == 1, str(info.value)


@pytest.mark.parametrize("b_address", ['"10.77.0.3/32"', '["10.9.0.0/16", "10.77.0.0/30"]'])
def test_overlapping_client_prefixes_are_refused_naming_both_clients(tmp_path, b_address):
    other = base64.b64encode(os.urandom(32)).decode()
    text = GATEWAY.replace('address = "10.77.0.2/32"', 'address = "10.77.0.0/24"') + (
        f'[[client]]\nname = "site-b"\npublic_key = "{other}"\naddress = {b_address}\n')
    with pytest.raises(ConfigError) as info:
        load_gateway(_write(tmp_path, text, "g.toml"))
    msg = str(info.value)
    assert "client[1].address" in msg and "site-a" in msg and "site-b" in msg and "overlap" in msg, msg


def test_error_carries_the_line_number(tmp_path):
    path = _write(tmp_path, CLIENT.replace("sockets = 2", "sockets = 99"))
    line = CLIENT.splitlines().index("sockets = 2") + 1
    with pytest.raises(ConfigError, match=rf"^{path}:{line}: link\[0\].sockets"):
        load_client(path)


def test_missing_section_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"missing \[gateway\]"):
        load_client(_write(tmp_path, CLIENT.split("[gateway]")[0]))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_client(_write(tmp_path, "[client\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_client(tmp_path / "absent.toml")


def test_gateway_duplicate_client_key(tmp_path):
    text = GATEWAY + f'[[client]]\nname = "b"\npublic_key = "{KEY}"\naddress = "10.77.0.3/32"\n'
    with pytest.raises(ConfigError, match=r"client\[1\].public_key: the same key"):
        load_gateway(_write(tmp_path, text, "g.toml"))


def test_cli_exits_2_with_one_line(tmp_path):
    path = _write(tmp_path, CLIENT.replace("sockets = 2", "sockets = 0"))
    proc = subprocess.run([sys.executable, "-m", "braid.cli.main", "client", "-c", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "link[0].sockets" in proc.stderr


def test_keygen_pubkey_round_trip():
    run = [sys.executable, "-m", "braid.cli.main"]
    private = subprocess.run([*run, "keygen"], capture_output=True, text=True, check=True).stdout
    assert len(base64.b64decode(private)) == 32
    public = subprocess.run([*run, "pubkey"], input=private, capture_output=True, text=True, check=True)
    assert len(base64.b64decode(public.stdout)) == 32
    bad = subprocess.run([*run, "pubkey"], input="zzz", capture_output=True, text=True)
    assert bad.returncode == 2 and "stdin" in bad.stderr


def test_keygen_writes_a_file_only_its_owner_can_read(tmp_path):
    run = [sys.executable, "-m", "braid.cli.main"]
    key = tmp_path / "site.key"
    subprocess.run([*run, "keygen", "-o", str(key)], check=True)
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(key.read_text())) == 32
    again = subprocess.run([*run, "keygen", "-o", str(key)], capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr


def test_a_key_file_readable_by_others_is_warned_about(tmp_path, caplog):
    key = tmp_path / "k"
    key.write_text(KEY)
    key.chmod(0o644)
    text = CLIENT.replace(f'private_key = "{KEY}"', f'private_key_file = "{key}"')
    with caplog.at_level("WARNING"):
        load_client(_write(tmp_path, text))
    assert any("readable by group or others" in r.message for r in caplog.records)
    key.chmod(0o600)
    caplog.clear()
    load_client(_write(tmp_path, text))
    assert not caplog.records


def test_full_tunnel_and_nat_keys(tmp_path):
    c = load_client(_write(tmp_path, CLIENT.replace(
        'address = "10.77.0.2/24"', 'address = "10.77.0.2/24"\nroutes = ["0.0.0.0/0", "::/0"]\n'
        'kill_switch = true\ntable = 200')))
    assert [str(r) for r in c.routes] == ["0.0.0.0/0", "::/0"] and c.kill_switch
    assert c.table == 200 and c.fwmark == 200
    assert load_client(_write(tmp_path, CLIENT)).routes == ()
    g = load_gateway(_write(tmp_path, GATEWAY.replace('listen = "[::]:7000"',
                                                      'listen = "[::]:7000"\nnat = true\negress = "eth0"'),
                            "g.toml"))
    assert g.nat and g.egress == "eth0" and g.forwarding
    with pytest.raises(ConfigError, match=r"client.table: must be a routing table number"):
        load_client(_write(tmp_path, CLIENT.replace('address = "10.77.0.2/24"',
                                                    'address = "10.77.0.2/24"\ntable = 254')))
    with pytest.raises(ConfigError, match=r"client.routes: 'x' is not an address"):
        load_client(_write(tmp_path, CLIENT.replace('address = "10.77.0.2/24"',
                                                    'address = "10.77.0.2/24"\nroutes = ["x"]')))
