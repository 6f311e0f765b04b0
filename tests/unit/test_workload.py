from braid.lab.workload import parse_ss

SS = """ESTAB 0      0      10.99.0.1:5201 10.99.0.2:42208
\t bbr wscale:1,1 rto:204 rtt:0.341/0.562 mss:62970 pmtu:65535 rcvmss:536 advmss:65483 cwnd:12 \
ssthresh:9 bytes_sent:1307233799 bytes_acked:1307107860 bbr:(bw:53027346296bps,mrtt:0.004,\
pacing_gain:1.25,cwnd_gain:2) busy:912ms rwnd_limited:284ms(31.1%) sndbuf_limited:16ms(1.8%) \
minrtt:0.004 snd_wnd:125940
ESTAB 0      0      10.99.0.1:5201 10.99.0.2:42198
\t cubic wscale:10,10 rto:204 rtt:0.033/0.019 mss:32768 cwnd:13 bytes_acked:180 minrtt:0.013
"""


def test_ss_fields_are_read_per_connection_and_not_from_lookalikes():
    data, control = parse_ss(SS)
    assert data == {"rtt": 0.341, "mss": 62970, "cwnd": 12, "bytes_acked": 1307107860, "busy": 912,
                    "rwnd_limited": 284, "sndbuf_limited": 16}
    assert control == {"rtt": 0.033, "mss": 32768, "cwnd": 13, "bytes_acked": 180}
    assert parse_ss("") == []
