"""om_teach.crypto.secagg: the sum is right under any dropout; the server learns only the sum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency

from om_teach.crypto.secagg import (
    Client,
    EncryptedShares,
    SecAggError,
    Server,
    UnmaskRequest,
    dequantize,
    pairwise_seed,
    prg,
    quantize,
    run_secagg,
)
from om_teach.crypto.sharing import PRIME, ShamirShare, shamir_reconstruct


def _plain_sum(inputs, ids, bits):
    return sum(np.asarray(inputs[u], dtype=object) for u in ids) % 2**bits


def test_known_answer_small_ring():
    """Three clients in Z_16: (1,2,3) + (4,5,6) + (7,8,9) = (12, 15, 18 mod 16 = 2)."""
    result = run_secagg([[1, 2, 3], [4, 5, 6], [7, 8, 9]], 2, bits=4, seed=0)
    assert result.total.tolist() == [12, 15, 2]
    assert result.survivors == (0, 1, 2) and result.dropped == ()


@pytest.mark.parametrize("bits", [1, 8, 20, 32, 64])
def test_sum_equals_plain_sum_mod_ring(bits):
    """Random inputs over the whole ring sum to the plain sum mod 2^bits."""
    rng = np.random.default_rng(bits)
    inputs = [rng.integers(0, 2**bits, 50, dtype=np.uint64) for _ in range(6)]
    result = run_secagg(inputs, 4, bits=bits)
    assert result.total.tolist() == _plain_sum(inputs, range(6), bits).tolist()


def test_masked_inputs_hide_the_inputs():
    """What the server receives in round 3 is not the input, and the masks still cancel."""
    inputs = [np.full(64, 7, dtype=np.uint32) for _ in range(4)]
    result = run_secagg(inputs, 3, seed=1)
    for message in result.view.masked:
        assert np.mean(message.vector == 7) < 0.1
    assert result.total.tolist() == [28] * 64


def test_quantized_floats_sum_within_tolerance():
    """Floats quantized with a clipping range sum, once dequantized, to the clipped float sum
    within one quantization step per client."""
    rng = np.random.default_rng(3)
    floats = [rng.normal(0, 0.5, 200) for _ in range(5)]
    c, levels = 1.0, 2**20
    inputs = [quantize(x, clipping_range=c, target_range=levels, rng=rng) for x in floats]
    result = run_secagg(inputs, 3, bits=32, seed=3)
    total = dequantize(result.total, clipping_range=c, target_range=levels, count=5)
    expected = np.sum([np.clip(x, -c, c) for x in floats], axis=0)
    assert np.max(np.abs(total - expected)) <= 5 * 2 * c / levels
    assert np.any(np.abs(np.concatenate(floats)) > c)  # clipping did happen


def test_dequantize_refuses_a_sum_that_can_wrap():
    """count * target_range past the ring would silently wrap: refused."""
    with pytest.raises(ValueError, match="sum past 2\\^16"):
        dequantize([0], clipping_range=1.0, target_range=2**14, count=4, bits=16)


@st.composite
def _dropouts(draw):
    n = draw(st.integers(3, 7))
    t = draw(st.integers(2, n))
    order = draw(st.permutations(range(n)))
    drops, left = {}, n
    for stage in ("advertise_keys", "share_keys", "masked_input"):
        k = draw(st.integers(0, left - t))
        drops[stage], order, left = order[:k], order[k:], left - k
    return n, t, drops


@settings(max_examples=30, deadline=None)
@given(case=_dropouts(), seed=st.integers(0, 2**32 - 1))
def test_dropout_at_any_round_keeps_the_sum_right(case, seed):
    """Whoever drops at whichever round, the total is the plain sum of the clients whose masked
    input arrived, as long as t are left at each step."""
    n, t, drops = case
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(0, 2**32, 8, dtype=np.uint32) for _ in range(n)]
    result = run_secagg(inputs, t, drop_after=drops, seed=seed)
    gone_early = set(drops["advertise_keys"]) | set(drops["share_keys"])
    assert set(result.survivors) == set(range(n)) - gone_early
    assert set(result.dropped) == set(drops["share_keys"])
    assert result.total.tolist() == _plain_sum(inputs, result.survivors, 32).tolist()


@pytest.mark.parametrize(
    ("drops", "where"),
    [
        ({"advertise_keys": [0, 1, 2]}, "share_keys"),
        ({"share_keys": [1, 3, 4]}, "masked_input"),
        ({"advertise_keys": [0], "share_keys": [4], "masked_input": [2]}, "unmask"),
        ({"masked_input": [0, 1, 2]}, "unmask"),
    ],
)
def test_aborts_below_threshold(drops, where):
    """Five clients, t=3: once fewer than three are left, the run stops and says where."""
    inputs = [np.arange(4, dtype=np.uint32)] * 5
    with pytest.raises(SecAggError, match=f"{where}.*fewer than the threshold t=3"):
        run_secagg(inputs, 3, drop_after=drops, seed=0)


def test_client_aborts_on_a_short_roster():
    """A client checks the threshold itself: a roster of two clients with t=3 is refused."""
    clients = [Client(u, [1, 2], threshold=3) for u in range(2)]
    roster = [c.advertise_keys() for c in clients]
    with pytest.raises(SecAggError, match="fewer than the threshold t=3"):
        clients[0].share_keys(roster)


def _through_share_keys(inputs, t, *, bits=8, seed=0, classes=None):
    classes = classes or {}
    clients = {
        u: classes.get(u, Client)(
            u, x, threshold=t, bits=bits, rng=np.random.default_rng([seed, u])
        )
        for u, x in enumerate(inputs)
    }
    server = Server(threshold=t, vector_length=len(inputs[0]), bits=bits)
    roster = server.advertise_keys([c.advertise_keys() for c in clients.values()])
    inboxes = server.share_keys([c.share_keys(roster) for c in clients.values()])
    return clients, server, roster, inboxes


def test_tampered_ciphertext_is_rejected():
    """One flipped bit in a routed share ciphertext fails AES-GCM authentication."""
    clients, _, _, inboxes = _through_share_keys([[1, 2]] * 4, 3)
    inbox = list(inboxes[2])
    raw = bytearray(inbox[0].ciphertext)
    raw[20] ^= 1
    inbox[0] = dataclasses.replace(inbox[0], ciphertext=bytes(raw))
    with pytest.raises(SecAggError, match="failed AES-GCM authentication"):
        clients[2].masked_input(inbox)


def test_ciphertext_is_bound_to_sender_and_receiver():
    """A server that relabels who sent a share, hands it to another client, or reflects it to
    its sender (same key, other associated data) is caught."""
    clients, _, _, inboxes = _through_share_keys([[1, 2]] * 4, 3)
    relabelled = dataclasses.replace(inboxes[2][0], sender=inboxes[2][1].sender)
    with pytest.raises(SecAggError, match="failed AES-GCM authentication"):
        clients[2].masked_input([relabelled, *inboxes[2][2:]])
    clients, _, _, inboxes = _through_share_keys([[1, 2]] * 4, 3)
    forwarded = EncryptedShares(inboxes[1][0].sender, 2, inboxes[1][0].ciphertext)
    with pytest.raises(SecAggError, match="failed AES-GCM authentication"):
        clients[2].masked_input([forwarded])
    clients, _, _, inboxes = _through_share_keys([[1, 2]] * 4, 3)
    sender = inboxes[2][0].sender
    reflected = EncryptedShares(2, sender, inboxes[2][0].ciphertext)
    with pytest.raises(SecAggError, match="failed AES-GCM authentication"):
        clients[sender].masked_input([reflected])


def test_client_refuses_to_reveal_both_shares_of_one_client():
    """An honest client refuses a request naming a client both surviving and dropped, and any
    request that would complete the other kind of share of a client it answered for before."""
    clients, server, _, inboxes = _through_share_keys([[1, 2]] * 5, 3)
    server.masked_input([c.masked_input(inboxes[u]) for u, c in clients.items()])
    honest = clients[0]
    with pytest.raises(SecAggError, match=r"\[4\] as both surviving and dropped"):
        honest.unmask(UnmaskRequest(survivors=(0, 1, 2, 3, 4), dropped=(4,)))
    response = honest.unmask(UnmaskRequest(survivors=(0, 1, 2, 3), dropped=(4,)))
    assert set(response.sk_shares) == {4} and set(response.b_shares) == {0, 1, 2, 3}
    with pytest.raises(SecAggError, match=r"told earlier that client\(s\) \[4\] dropped"):
        honest.unmask(UnmaskRequest(survivors=(0, 1, 2, 4), dropped=()))
    with pytest.raises(SecAggError, match=r"told earlier that client\(s\) \[3\] survived"):
        honest.unmask(UnmaskRequest(survivors=(0, 1, 2), dropped=(3,)))
    with pytest.raises(SecAggError, match="it sent its masked input, yet is listed dropped"):
        clients[1].unmask(UnmaskRequest(survivors=(0, 2, 3, 4), dropped=(1,)))


def test_server_detects_a_wrong_mask_key_share():
    """A wrong s_sk-share rebuilds a key whose public half is not the advertised one: caught."""
    clients, server, _, inboxes = _through_share_keys([[1, 2]] * 5, 3)
    request = server.masked_input([c.masked_input(inboxes[u]) for u, c in clients.items() if u])
    responses = [clients[u].unmask(request) for u in (1, 2, 3)]
    share = responses[0].sk_shares[0]
    responses[0].sk_shares[0] = ShamirShare(share.x, ((share.y[0] + 1) % PRIME,))
    with pytest.raises(SecAggError, match="rebuilt mask key of client 0 does not match"):
        server.unmask(responses)


def test_rounds_out_of_order_are_refused():
    """A client answers the rounds in order only."""
    client = Client(0, [1, 2], threshold=2)
    with pytest.raises(SecAggError, match="masked_input called out of order"):
        client.masked_input([])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"inputs": [[1, 2], [3, 300]], "bits": 8}, ValueError, r"\[0, 2\^8\)"),
        ({"inputs": [[1, 2], [-1, 2]]}, ValueError, r"\[0, 2\^32\)"),
        ({"inputs": [[1.5, 2], [1, 2]]}, TypeError, "integers"),
        ({"inputs": [[1, 2], [1, 2]], "bits": 65}, ValueError, "bits must be"),
        ({"inputs": [[1, 2], [1, 2, 3]]}, ValueError, "same length"),
        ({"inputs": [[1], [2]], "threshold": 3}, ValueError, "exceeds the 2 clients"),
        ({"inputs": [[1], [2]], "threshold": 1}, ValueError, "at least 2"),
        ({"inputs": [[1], [2]], "drop_after": {"unmask": [0]}}, ValueError, "drop_after rounds"),
        ({"inputs": [[1], [2]], "drop_after": {"share_keys": [5]}}, ValueError, "at most once"),
    ],
)
def test_bad_input_is_refused(kwargs, error, match):
    """Out-of-ring values, floats, a bad ring, ragged vectors, a bad threshold or drop list."""
    kwargs = {"threshold": 2, **kwargs}
    with pytest.raises(error, match=match):
        run_secagg(kwargs.pop("inputs"), kwargs.pop("threshold"), **kwargs)


def test_message_sizes_follow_the_wire_format():
    """Bytes per client: 68 of keys, 176 per encrypted share pair, the packed vector, and 74 per
    revealed share; the server relays what it receives and broadcasts rosters and requests."""
    n, d, bits = 5, 100, 12
    result = run_secagg([np.zeros(d, dtype=np.uint16)] * n, 3, bits=bits, seed=0)
    keys = 4 + 32 + 32
    shares = (n - 1) * (4 + 4 + 12 + (4 + 4 + 66 + 66) + 16)
    masked = 4 + d * bits // 8
    unmask = 4 + n * (4 + 4 + 66)
    assert set(result.client_bytes.values()) == {keys + shares + masked + unmask}
    assert result.server_bytes == n * n * keys + n * shares + n * (4 * n)


def test_prg_is_deterministic_uniform_and_in_range():
    """One seed, one stream; values stay in Z_2^bits and cover it evenly."""
    seed = bytes(range(32))
    assert np.array_equal(prg(seed, 1000, bits=32), prg(seed, 1000, bits=32))
    assert not np.array_equal(prg(seed, 1000), prg(bytes(32), 1000))
    small = prg(seed, 64_000, bits=5)
    counts = np.bincount(small, minlength=32)
    assert small.max() < 32 and counts.min() > 1700 and counts.max() < 2300


# The server's view ------------------------------------------------------------------------


def _stripped(result, t, bits):
    """What a curious server can compute of each survivor's input from all it received: the
    masked vector less the self-mask it rebuilds and the masks of dropped clients it rebuilds."""
    s_pk = {k.client_id: k.s_pk for k in result.view.keys}
    responses = result.view.responses[:t]
    masked = {m.client_id: m.vector for m in result.view.masked}
    out = {}
    for u in result.survivors:
        (b,) = shamir_reconstruct([r.b_shares[u] for r in responses], t)
        z = masked[u] - prg(b.to_bytes(32, "big"), len(masked[u]), bits=bits)
        for v in result.dropped:
            (sk,) = shamir_reconstruct([r.sk_shares[v] for r in responses], t)
            mask = prg(pairwise_seed(sk.to_bytes(32, "big"), s_pk[u]), len(z), bits=bits)
            z = z - mask if u < v else z + mask
        out[u] = z
    return out


def _p_values(samples_a, samples_b):
    """Per-coordinate chi-square two-sample tests on 16 bins of Z_256 (the top four bits)."""
    p = []
    for a, b in zip(samples_a.T, samples_b.T, strict=True):
        table = np.stack([np.bincount(a >> 4, minlength=16), np.bincount(b >> 4, minlength=16)])
        table = table[:, table.sum(axis=0) > 0]
        p.append(chi2_contingency(table).pvalue if table.shape[1] > 1 else 1.0)
    return np.array(p)


@pytest.mark.parametrize("drops", [{}, {"share_keys": [3]}], ids=["no dropout", "one dropped"])
def test_server_view_is_the_same_for_inputs_with_the_same_sum(drops):
    """Over many runs, what the server receives and what it can strip from it are distributed
    the same for two input sets with equal sums; the same test tells the inputs themselves apart."""
    bits, t, runs = 8, 3, 300
    a = np.array([[10, 200, 3, 0], [20, 0, 3, 0], [30, 55, 3, 0], [5, 5, 5, 5]], dtype=np.uint8)
    b = np.array([[60, 0, 9, 0], [0, 0, 0, 0], [0, 255, 0, 0], [5, 5, 5, 5]], dtype=np.uint8)
    survivors = [0, 1, 2] if drops else [0, 1, 2, 3]
    assert _plain_sum(a, survivors, bits).tolist() == _plain_sum(b, survivors, bits).tolist()
    views = []
    for inputs, offset in ((a, 0), (b, 10_000)):
        received, stripped = [], []
        for i in range(runs):
            result = run_secagg(list(inputs), t, bits=bits, drop_after=drops, seed=offset + i)
            received.append(np.concatenate([m.vector for m in result.view.masked]))
            z = _stripped(result, t, bits)
            stripped.append(np.concatenate([z[u] for u in survivors[:-1]]))
        views.append((np.array(received), np.array(stripped)))
    (received_a, stripped_a), (received_b, stripped_b) = views
    p = np.concatenate([_p_values(received_a, received_b), _p_values(stripped_a, stripped_b)])
    assert p.min() > 0.01 / len(p), f"views differ: p={p.min():.2g}"
    inputs_a = np.tile(a[survivors[:-1]].ravel(), (runs, 1))
    inputs_b = np.tile(b[survivors[:-1]].ravel(), (runs, 1))
    assert (_p_values(inputs_a, inputs_b) < 1e-20).any()  # the test has power


# An attacker ------------------------------------------------------------------------------


class _ForgetfulClient(Client):
    """Forgets its self-mask: only the pairwise masks hide its input."""

    def _self_mask(self, length):
        return np.zeros(length, dtype=self.vector.dtype)


class _CarelessClient(Client):
    """Answers any unmask request, skipping the both-shares rule."""

    def _check_request(self, request):
        return None


def _attack(target, clients, colluders, roster, masked, responses, t, bits):
    """A server with t-1 colluding clients rebuilds every secret of ``target`` it can reach from
    what it received (masked input, revealed shares) and what the colluders hold, strips the masks
    it can rebuild and leaves the others in: its best guess at the target's input."""
    keys = {k.client_id: k for k in roster}
    found = {}
    for kind, index in (("b_shares", 0), ("sk_shares", 1)):
        shares = {
            r.client_id: getattr(r, kind)[target] for r in responses if target in getattr(r, kind)
        }
        for c in colluders:
            shares[c] = ShamirShare(clients[c]._x[c], (clients[c]._held[target][index],))
        if len(shares) >= t:
            (secret,) = shamir_reconstruct(list(shares.values()), t)
            found[kind] = secret.to_bytes(32, "big")
    guess = masked[target].vector.copy()
    length = len(guess)
    if "b_shares" in found:
        guess -= prg(found["b_shares"], length, bits=bits)
    for v in keys:
        if v == target:
            continue
        if "sk_shares" in found:
            seed = pairwise_seed(found["sk_shares"], keys[v].s_pk)
        elif v in colluders:
            seed = pairwise_seed(clients[v]._s_sk.private_bytes_raw(), keys[target].s_pk)
        else:
            continue
        mask = prg(seed, length, bits=bits)
        guess = guess - mask if target < v else guess + mask
    return guess


@pytest.mark.parametrize(
    ("target_class", "others_class", "server_lies", "succeeds"),
    [
        (Client, Client, False, False),
        (Client, Client, True, False),
        (_ForgetfulClient, Client, True, True),
        (Client, _CarelessClient, True, True),
    ],
    ids=["honest server", "lying server", "no self-mask", "careless clients"],
)
def test_attacker_learns_the_input_only_when_a_rule_is_broken(
    target_class, others_class, server_lies, succeeds
):
    """A curious server with t-1 colluders guesses a client's input no better than chance; when
    it claims the client dropped (a lie a late client makes possible) it gets its s_sk but not its
    b, unless the client skipped its self-mask or the others reveal both shares."""
    n, t, bits, target, colluders = 5, 3, 8, 4, (0, 1)
    rng = np.random.default_rng(7)
    inputs = [rng.integers(0, 256, 4096, dtype=np.uint8) for _ in range(n)]
    classes = {u: target_class if u == target else others_class for u in range(n)}
    clients, server, roster, inboxes = _through_share_keys(inputs, t, classes=classes)
    masked = {u: c.masked_input(inboxes[u]) for u, c in clients.items()}
    request = server.masked_input(list(masked.values()))
    honest = [u for u in clients if u not in colluders and u != target]
    if not server_lies:
        responses = [c.unmask(request) for c in clients.values()]
        assert np.array_equal(server.unmask(responses), _plain_sum(inputs, range(n), bits))
    else:
        others = tuple(u for u in range(n) if u != target)
        responses = [clients[u].unmask(UnmaskRequest(others, (target,))) for u in honest]
        ask_b = UnmaskRequest(tuple(range(n)), ())
        for u in honest:
            if others_class is Client:
                with pytest.raises(SecAggError, match="told earlier"):
                    clients[u].unmask(ask_b)
            else:
                responses.append(clients[u].unmask(ask_b))
    guess = _attack(target, clients, colluders, roster, masked, responses, t, bits)
    accuracy = np.mean(guess == inputs[target])
    if succeeds:
        assert accuracy == 1.0
    else:
        assert accuracy < 2 / 256, f"guessed {accuracy:.3%} of the input"
