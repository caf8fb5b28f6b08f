"""om_teach.sonar: the ModelRepository contract and its client, on eth-tester and on anvil.

Every test that takes ``chain`` runs on both chains with the same compiled bytecode; anvil is
started once for the module and skipped, with the reason, when its binary is not installed.
Capsule models are settled with signatures by fresh ``eth_account`` keys, which no node knows.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from eth_account import Account

from om_teach.sonar.chain import AnvilNode, Chain
from om_teach.sonar.contract import (
    GAS_LIMIT,
    MAX_CONTRIBUTORS,
    SETTLEMENT_TAG,
    ZERO_ADDRESS,
    ContractRevert,
    ModelRepository,
    check_cid,
    compile_contract,
    settlement_digest,
    to_fixed,
)

from .conftest import require_anvil

ETHER = 10**18
ACCOUNTS = MAX_CONTRIBUTORS + 2  # an owner, a full round, and one too many
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def cid(n: int) -> str:
    """A well-formed CIDv0 that encodes ``n``."""
    digits = ""
    while True:
        n, d = divmod(n, 58)
        digits = BASE58[d] + digits
        if not n:
            return "Qm" + digits.rjust(44, "z")


@pytest.fixture(scope="module")
def embedded_chain():
    return Chain.embedded(accounts=ACCOUNTS)


@pytest.fixture(scope="module")
def anvil_chain():
    require_anvil()
    with Chain.anvil(accounts=ACCOUNTS) as chain:
        yield chain


@pytest.fixture(scope="module", params=["eth-tester", "anvil"])
def chain(request):
    fixture = "embedded_chain" if request.param == "eth-tester" else "anvil_chain"
    return request.getfixturevalue(fixture)


@pytest.fixture
def repo(chain):
    return ModelRepository.deploy(chain)


def owner_mines(chain):
    return chain.accounts[0], chain.accounts[1:11]


def fee(tx) -> int:
    return tx.gas_used * tx.receipt.effectiveGasPrice


def post(repo, owner, *, bounty=ETHER, initial=1.0, target=0.5):
    model_id, _ = repo.post_model(
        cid(0), bounty=bounty, initial_error=initial, target_error=target, sender=owner
    )
    return model_id


def run_round(repo, model_id, round, mines, error, owner):
    for i, mine in enumerate(mines):
        repo.submit_gradient(model_id, round, cid(1000 * (round + 1) + i), sender=mine)
    return repo.evaluate_round(model_id, round, cid(900 + round), error, sender=owner)


def test_one_bytecode_deploys_and_behaves_the_same_on_both_chains(embedded_chain, anvil_chain):
    """The same compiled bytecode leaves the same runtime code and spends the same gas on both."""
    assert compile_contract() is compile_contract()
    gas, code = [], []
    for chain in (embedded_chain, anvil_chain):
        repo = ModelRepository.deploy(chain)
        owner, mines = owner_mines(chain)
        model_id = post(repo, owner)
        run_round(repo, model_id, 0, mines[:3], 0.75, owner)
        repo.pay_round(model_id, 0, sender=owner)
        code.append(chain.web3.eth.get_code(repo.address))
        gas.append(dict(repo.gas))
        assert repo.remaining_bounty(model_id) == ETHER - 3 * (ETHER // 2 // 3) == ETHER // 2 + 2
    assert code[0] == code[1] and len(code[0]) > 1000
    assert gas[0] == gas[1]
    assert set(gas[0]) == {"deploy", "post_model", "submit_gradient", "evaluate_round", "pay_round"}


def test_post_model_escrows_the_bounty_and_logs_it(chain, repo):
    """The bounty moves from the owner (plus gas) into the contract; ModelPosted says so."""
    owner, _ = owner_mines(chain)
    eth = chain.web3.eth
    before = eth.get_balance(owner)
    model_id, tx = repo.post_model(
        cid(0), bounty=3 * ETHER, initial_error=0.4125, target_error=0.1, sender=owner
    )
    assert model_id == 0 and repo.model_count() == 1
    assert eth.get_balance(owner) == before - 3 * ETHER - fee(tx)
    assert eth.get_balance(repo.address) == 3 * ETHER
    (event,) = tx.events
    assert event.name == "ModelPosted"
    assert event.args == {
        "model_id": 0,
        "owner": owner,
        "cid": cid(0),
        "bounty": 3 * ETHER,
        "initial_error": 412_500,
        "target_error": 100_000,
        "capsule": ZERO_ADDRESS,
        "capsule_record": bytes(32),
    }
    info = repo.model(model_id)
    assert (info.owner, info.cid, info.bounty, info.remaining) == (
        owner,
        cid(0),
        3 * ETHER,
        3 * ETHER,
    )
    assert (info.initial_error, info.target_error, info.best_error) == (0.4125, 0.1, 0.4125)
    assert info.current_round == 0 and repo.gas["post_model"] == [tx.gas_used]
    assert info.capsule is None and info.capsule_record is None


def test_post_model_guards(chain, repo):
    """No bounty, or a target not below the initial error, is refused by client and contract."""
    owner, _ = owner_mines(chain)
    with pytest.raises(ValueError, match="bounty"):
        repo.post_model(cid(0), bounty=0, initial_error=1.0, target_error=0.5, sender=owner)
    with pytest.raises(ContractRevert, match="post_model reverted: bounty must be positive"):
        repo.transact("post_model", (cid(0), 10**6, 5 * 10**5), sender=owner, value=0)
    with pytest.raises(ContractRevert, match="target error must be below the initial error"):
        repo.post_model(cid(0), bounty=ETHER, initial_error=0.5, target_error=0.5, sender=owner)
    assert repo.model_count() == 0


def test_gradients_are_recorded_once_per_address_per_round(chain, repo):
    """A second gradient from the same address in a round reverts; the next round takes it."""
    owner, mines = owner_mines(chain)
    model_id = post(repo, owner)
    tx = repo.submit_gradient(model_id, 0, cid(1), sender=mines[0])
    assert tx.events[0].name == "GradientSubmitted"
    assert tx.events[0].args == {
        "model_id": model_id,
        "round": 0,
        "submitter": mines[0],
        "cid": cid(1),
    }
    repo.submit_gradient(model_id, 0, cid(2), sender=mines[1])
    with pytest.raises(ContractRevert) as caught:
        repo.submit_gradient(model_id, 0, cid(3), sender=mines[0])
    assert str(caught.value) == "submit_gradient reverted: already submitted this round"
    assert (caught.value.call, caught.value.reason) == (
        "submit_gradient",
        "already submitted this round",
    )
    assert repo.gradient_cids(model_id, 0) == [cid(1), cid(2)]
    assert repo.submitters(model_id, 0) == list(mines[:2])
    repo.evaluate_round(model_id, 0, cid(9), 0.9, sender=owner)
    repo.submit_gradient(model_id, 1, cid(3), sender=mines[0])
    assert repo.submitters(model_id, 1) == [mines[0]]


def test_gradients_go_to_the_current_round_of_an_existing_model(chain, repo):
    """A gradient for a past or future round, or for an unknown model, reverts."""
    owner, mines = owner_mines(chain)
    model_id = post(repo, owner)
    with pytest.raises(ContractRevert, match="not the model's current round"):
        repo.submit_gradient(model_id, 1, cid(1), sender=mines[0])
    run_round(repo, model_id, 0, mines[:1], 0.9, owner)
    with pytest.raises(ContractRevert, match="not the model's current round"):
        repo.submit_gradient(model_id, 0, cid(1), sender=mines[1])
    with pytest.raises(ContractRevert, match="no such model"):
        repo.submit_gradient(model_id + 1, 0, cid(1), sender=mines[0])


def test_malformed_cids_are_refused_by_client_and_contract(chain, repo):
    """An empty, over-long or non-CID string is refused by the client, and by the contract."""
    owner, mines = owner_mines(chain)
    model_id = post(repo, owner)
    with pytest.raises(ValueError, match="empty CID"):
        check_cid("")
    with pytest.raises(ValueError, match="65 characters"):
        check_cid("b" + "a" * 64)
    with pytest.raises(ValueError, match="not a CIDv0"):
        check_cid("Qm" + "0" * 44)  # 0 is not a base58 digit
    with pytest.raises(TypeError, match="str"):
        check_cid(b"Qm")
    assert check_cid("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi")
    with pytest.raises(ContractRevert, match="submit_gradient reverted: empty CID"):
        repo.transact("submit_gradient", (model_id, 0, ""), sender=mines[0])
    with pytest.raises(ContractRevert, match="submit_gradient reverted: no reason given"):
        repo.transact("submit_gradient", (model_id, 0, "Q" * 65), sender=mines[0])
    repo.submit_gradient(model_id, 0, cid(1), sender=mines[0])
    with pytest.raises(ContractRevert, match="evaluate_round reverted: empty CID"):
        repo.transact("evaluate_round", (model_id, 0, "", 1), sender=owner)
    assert repo.gradient_cids(model_id, 0) == [cid(1)]


def test_only_the_owner_evaluates_pays_and_withdraws(chain, repo):
    """Anyone else's evaluate, pay or withdraw reverts before it is sent, costing no gas."""
    owner, mines = owner_mines(chain)
    eth = chain.web3.eth
    model_id = post(repo, owner)
    repo.submit_gradient(model_id, 0, cid(1), sender=mines[0])
    block, balance = eth.block_number, eth.get_balance(mines[0])
    with pytest.raises(ContractRevert, match="only the model's owner may evaluate"):
        repo.evaluate_round(model_id, 0, cid(9), 0.5, sender=mines[0])
    assert (eth.block_number, eth.get_balance(mines[0])) == (block, balance)
    repo.evaluate_round(model_id, 0, cid(9), 0.75, sender=owner)
    with pytest.raises(ContractRevert, match="only the model's owner may pay"):
        repo.pay_round(model_id, 0, sender=mines[0])
    with pytest.raises(ContractRevert, match="only the model's owner may withdraw"):
        repo.withdraw_bounty(model_id, sender=mines[1])
    assert chain.web3.eth.get_balance(repo.address) == ETHER
    assert repo.round_result(model_id, 0).paid is False


def test_a_round_needs_gradients_and_an_evaluation_before_it_pays(chain, repo):
    """Evaluating an empty round, or paying an unevaluated one, reverts."""
    owner, mines = owner_mines(chain)
    model_id = post(repo, owner)
    with pytest.raises(ContractRevert, match="no gradients in this round"):
        repo.evaluate_round(model_id, 0, cid(9), 0.5, sender=owner)
    repo.submit_gradient(model_id, 0, cid(1), sender=mines[0])
    with pytest.raises(ContractRevert, match="pay_round reverted: round not evaluated"):
        repo.pay_round(model_id, 0, sender=owner)
    with pytest.raises(ContractRevert, match="round_payout reverted: round not evaluated"):
        repo.round_payout(model_id, 0)


def test_payout_by_improvement_known_answers(chain, repo):
    """bounty × (best − max(new, target)) // (initial − target), split equally, rounding down."""
    owner, mines = owner_mines(chain)
    eth = chain.web3.eth
    model_id = post(repo, owner, bounty=ETHER, initial=1.0, target=0.5)

    # Round 0: 1.0 -> 0.8 is 0.2 of the 0.5 the bounty buys: 0.4 ether for 3 mines.
    tx = run_round(repo, model_id, 0, mines[:3], 0.8, owner)
    assert tx.events[0].args["improved"] is True
    assert repo.round_payout(model_id, 0) == 4 * ETHER // 10
    before = [eth.get_balance(m) for m in mines[:3]]
    owner_before = eth.get_balance(owner)
    tx = repo.pay_round(model_id, 0, sender=owner)
    share = 4 * ETHER // 10 // 3
    assert share == 133_333_333_333_333_333
    assert [eth.get_balance(m) - b for m, b in zip(mines[:3], before, strict=True)] == [share] * 3
    assert eth.get_balance(owner) == owner_before - fee(tx)
    assert [(e.name, e.args["to"], e.args["amount"]) for e in tx.events] == [
        ("Paid", m, share) for m in mines[:3]
    ]
    assert repo.remaining_bounty(model_id) == ETHER - 3 * share == 6 * ETHER // 10 + 1

    # Round 1: 0.8 -> 0.9 is worse: nothing is paid, the best model stays.
    tx = run_round(repo, model_id, 1, mines[:2], 0.9, owner)
    assert tx.events[0].args["improved"] is False
    before = [eth.get_balance(m) for m in mines[:2]]
    tx = repo.pay_round(model_id, 1, sender=owner)
    assert tx.events == () and [eth.get_balance(m) for m in mines[:2]] == before
    assert repo.round_result(model_id, 1).paid and repo.best_error(model_id) == 0.8
    assert repo.model_cid(model_id) == cid(900)

    # Round 2: 0.8 -> 0.3 overshoots the 0.5 target: only 0.8 -> 0.5 is paid, 0.6 ether.
    run_round(repo, model_id, 2, mines[3:5], 0.3, owner)
    before = [eth.get_balance(m) for m in mines[3:5]]
    repo.pay_round(model_id, 2, sender=owner)
    assert [eth.get_balance(m) - b for m, b in zip(mines[3:5], before, strict=True)] == [
        3 * ETHER // 10
    ] * 2
    assert repo.best_error(model_id) == 0.3 and repo.model_cid(model_id) == cid(902)
    assert repo.remaining_bounty(model_id) == 1  # the rounding dust of round 0
    assert eth.get_balance(repo.address) == 1


def test_a_full_round_refuses_more_and_pays_everyone(chain, repo):
    """A round holds 64 gradients; paying all 64 fits in the client's gas limit."""
    owner, everyone = chain.accounts[0], chain.accounts[1:]
    eth = chain.web3.eth
    model_id = post(repo, owner)
    for i, mine in enumerate(everyone[:MAX_CONTRIBUTORS]):
        repo.submit_gradient(model_id, 0, cid(i), sender=mine)
    with pytest.raises(ContractRevert, match="submit_gradient reverted: round is full"):
        repo.submit_gradient(model_id, 0, cid(1), sender=everyone[MAX_CONTRIBUTORS])
    repo.evaluate_round(model_id, 0, cid(99), 0.99, sender=owner)
    before = eth.get_balance(everyone[0])
    tx = repo.pay_round(model_id, 0, sender=owner)
    share = ETHER * 10_000 // 500_000 // MAX_CONTRIBUTORS
    assert len(tx.events) == MAX_CONTRIBUTORS and eth.get_balance(everyone[0]) == before + share
    assert tx.gas_used < GAS_LIMIT // 2


def test_a_round_is_paid_once(chain, repo):
    """Paying a round a second time reverts and pays no one."""
    owner, mines = owner_mines(chain)
    model_id = post(repo, owner)
    run_round(repo, model_id, 0, mines[:2], 0.75, owner)
    repo.pay_round(model_id, 0, sender=owner)
    balance = chain.web3.eth.get_balance(repo.address)
    with pytest.raises(ContractRevert, match="pay_round reverted: round already paid"):
        repo.pay_round(model_id, 0, sender=owner)
    assert chain.web3.eth.get_balance(repo.address) == balance == ETHER // 2


def test_payout_beyond_the_remaining_bounty_reverts(chain, repo):
    """Once the owner has withdrawn the escrow, a round it still owes cannot be paid."""
    owner, mines = owner_mines(chain)
    eth = chain.web3.eth
    model_id = post(repo, owner)
    run_round(repo, model_id, 0, mines[:2], 0.75, owner)
    before = eth.get_balance(owner)
    tx = repo.withdraw_bounty(model_id, sender=owner)
    assert eth.get_balance(owner) == before + ETHER - fee(tx)
    assert tx.events[0].args == {"model_id": model_id, "owner": owner, "amount": ETHER}
    with pytest.raises(ContractRevert, match="pay_round reverted: payout exceeds remaining bounty"):
        repo.pay_round(model_id, 0, sender=owner)
    with pytest.raises(ContractRevert, match="nothing left to withdraw"):
        repo.withdraw_bounty(model_id, sender=owner)


def test_models_keep_separate_escrows_and_rounds(chain, repo):
    """Paying one model's round spends its own escrow only; events filter by model and round."""
    owner, mines = owner_mines(chain)
    first = post(repo, owner, bounty=ETHER)
    second, _ = repo.post_model(
        cid(1), bounty=2 * ETHER, initial_error=2.0, target_error=1.0, sender=mines[9]
    )
    assert second == first + 1
    run_round(repo, first, 0, mines[:2], 0.5, owner)
    repo.pay_round(first, 0, sender=owner)
    assert repo.remaining_bounty(first) == 0
    assert repo.remaining_bounty(second) == 2 * ETHER
    assert chain.web3.eth.get_balance(repo.address) == 2 * ETHER
    with pytest.raises(ContractRevert, match="only the model's owner may pay"):
        repo.pay_round(second, 0, sender=owner)
    repo.submit_gradient(second, 0, cid(5), sender=mines[0])
    submitted = repo.events("GradientSubmitted", model_id=second)
    assert [(e.args["submitter"], e.args["cid"]) for e in submitted] == [(mines[0], cid(5))]
    assert len(repo.events("GradientSubmitted", model_id=first, round=0)) == 2
    assert [e.args["model_id"] for e in repo.events("ModelPosted")] == [first, second]
    with pytest.raises(ValueError, match="no event 'Payd'"):
        repo.events("Payd")


def test_gas_is_recorded_per_call(chain, repo):
    """Each transaction's gas is its receipt's and is logged under the call's name."""
    owner, mines = owner_mines(chain)
    model_id = post(repo, owner)
    txs = [repo.submit_gradient(model_id, 0, cid(i), sender=m) for i, m in enumerate(mines[:3])]
    assert repo.gas["submit_gradient"] == [tx.gas_used for tx in txs]
    assert all(tx.receipt.gasUsed == tx.gas_used > 21_000 for tx in txs)
    assert 0 < repo.gas["deploy"][0] < 30_000_000


def test_at_attaches_to_a_deployed_repository(chain, repo):
    """at() reads the same state; it refuses an address without code."""
    owner, _ = owner_mines(chain)
    model_id = post(repo, owner)
    again = ModelRepository.at(chain, repo.address.lower())
    assert again.model_cid(model_id) == cid(0)
    with pytest.raises(ValueError, match="no contract at"):
        ModelRepository.at(chain, owner)
    with pytest.raises(ValueError, match="not an Ethereum address"):
        ModelRepository.at(chain, "0x1234")


RECORD = hashlib.sha256(b"a capsule's key record").hexdigest()
SETTLEMENT = hashlib.sha256(b"a capsule's release record").digest()


def post_capsule(repo, owner, capsule, *, bounty=ETHER):
    model_id, _ = repo.post_model(
        cid(0),
        bounty=bounty,
        initial_error=1.0,
        target_error=0.5,
        sender=owner,
        capsule=capsule.address,
        capsule_record=RECORD,
    )
    return model_id


def sign(key, repo, model_id, round, considered, summed, settlement=SETTLEMENT, *, chain_id=None):
    """The capsule's 65-byte signature (r || s || v) over the settlement of ``round``."""
    chain_id = repo.chain.web3.eth.chain_id if chain_id is None else chain_id
    digest = settlement_digest(
        chain_id, repo.address, model_id, round, considered, summed, settlement
    )
    return bytes(Account.unsafe_sign_hash(digest, key.key).signature)


def settle(repo, key, model_id, round, considered, summed, *, sender, **kwargs):
    signature = sign(key, repo, model_id, round, considered, summed)
    return repo.settle_round(
        model_id,
        round,
        considered=considered,
        summed=summed,
        settlement=SETTLEMENT,
        signature=signature,
        sender=sender,
        **kwargs,
    )


def submit_all(repo, model_id, round, mines):
    for i, mine in enumerate(mines):
        repo.submit_gradient(model_id, round, cid(1000 * (round + 1) + i), sender=mine)


def test_a_capsule_model_is_posted_with_its_key_and_record(chain, repo):
    """The capsule's address and record fingerprint are logged and stored; both or neither."""
    owner, _ = owner_mines(chain)
    capsule = Account.create()
    model_id, tx = repo.post_model(
        cid(0),
        bounty=ETHER,
        initial_error=1.0,
        target_error=0.5,
        sender=owner,
        capsule=capsule.address.lower(),
        capsule_record=RECORD.upper(),
    )
    (event,) = tx.events
    assert event.args["capsule"] == capsule.address
    assert event.args["capsule_record"] == bytes.fromhex(RECORD)
    info = repo.model(model_id)
    assert (info.capsule, info.capsule_record) == (capsule.address, RECORD)
    assert repo.contract.functions.SETTLEMENT_TAG().call() == SETTLEMENT_TAG

    terms = {"bounty": ETHER, "initial_error": 1.0, "target_error": 0.5, "sender": owner}
    for capsule_args, message in [
        ({"capsule": capsule.address}, "go together"),
        ({"capsule_record": RECORD}, "go together"),
        ({"capsule": "0x1234", "capsule_record": RECORD}, "capsule is not an Ethereum address"),
        ({"capsule": ZERO_ADDRESS, "capsule_record": RECORD}, "zero address"),
        ({"capsule": capsule.address, "capsule_record": RECORD[:-1]}, "64 hex characters"),
        ({"capsule": capsule.address, "capsule_record": "0x" + RECORD}, "64 hex characters"),
        ({"capsule": capsule.address, "capsule_record": "0" * 64}, "all zeros"),
    ]:
        with pytest.raises(ValueError, match=message):
            repo.post_model(cid(0), **terms, **capsule_args)
    initial, target = 10**6, 5 * 10**5
    with pytest.raises(ContractRevert, match="post_model reverted: a capsule needs its record's"):
        args = (cid(0), initial, target, capsule.address, bytes(32))
        repo.transact("post_model", args, sender=owner, value=ETHER)
    with pytest.raises(ContractRevert, match="post_model reverted: a capsule record needs a"):
        args = (cid(0), initial, target, ZERO_ADDRESS, bytes.fromhex(RECORD))
        repo.transact("post_model", args, sender=owner, value=ETHER)
    assert repo.model_count() == 1


def test_a_capsule_round_closes_on_its_settlement_and_pays_only_the_summed(chain, repo):
    """Only the summed addresses are paid: not a considered submitter the capsule left out, nor
    a late one past ``considered``; the settled round refuses gradients and can be evaluated."""
    owner, mines = owner_mines(chain)
    eth = chain.web3.eth
    capsule = Account.create()
    model_id = post_capsule(repo, owner, capsule)
    submit_all(repo, model_id, 0, mines[:4])
    assert repo.payees(model_id, 0) == []
    assert repo.round_settlement(model_id, 0) == (False, 0, bytes(32))
    with pytest.raises(ContractRevert, match="evaluate_round reverted: round not settled by the"):
        repo.evaluate_round(model_id, 0, cid(9), 0.75, sender=owner)

    # The capsule read the first 3 submitters and summed two of them, in its own order.
    summed = [mines[2], mines[0]]
    tx = settle(repo, capsule, model_id, 0, 3, summed, sender=mines[9])
    assert [(e.name, e.args) for e in tx.events] == [
        (
            "RoundSettled",
            {"model_id": model_id, "round": 0, "settlement": SETTLEMENT, "summed": 2, "late": 1},
        )
    ]
    assert repo.round_settlement(model_id, 0) == (True, 3, SETTLEMENT)
    assert repo.payees(model_id, 0) == summed
    assert repo.submitters(model_id, 0) == list(mines[:4])
    with pytest.raises(ContractRevert, match="submit_gradient reverted: round closed"):
        repo.submit_gradient(model_id, 0, cid(5), sender=mines[4])

    repo.evaluate_round(model_id, 0, cid(9), 0.75, sender=owner)  # owed: half the bounty
    before = [eth.get_balance(m) for m in mines[:4]]
    tx = repo.pay_round(model_id, 0, sender=owner)
    share = ETHER // 2 // 2
    assert [(e.args["to"], e.args["amount"]) for e in tx.events] == [(m, share) for m in summed]
    gained = [eth.get_balance(m) - b for m, b in zip(mines[:4], before, strict=True)]
    assert gained == [share, 0, share, 0]
    assert repo.remaining_bounty(model_id) == ETHER // 2
    assert repo.round_settlement(model_id, 0) == (True, 3, SETTLEMENT)

    # The next round needs its own settlement.
    repo.submit_gradient(model_id, 1, cid(6), sender=mines[1])
    with pytest.raises(ContractRevert, match="round not settled by the capsule"):
        repo.evaluate_round(model_id, 1, cid(10), 0.7, sender=owner)


def test_a_hydrogen_round_pays_all_its_submitters_and_cannot_be_settled(chain, repo):
    """Without a capsule, payees are the submitters and the round closes when evaluated."""
    owner, mines = owner_mines(chain)
    model_id = post(repo, owner)
    submit_all(repo, model_id, 0, mines[:3])
    assert repo.payees(model_id, 0) == list(mines[:3])
    assert repo.round_settlement(model_id, 0) == (False, 0, bytes(32))
    anyone = Account.create()
    with pytest.raises(ContractRevert, match="settle_round reverted: the model has no capsule"):
        settle(repo, anyone, model_id, 0, 3, list(mines[:3]), sender=owner)
    repo.evaluate_round(model_id, 0, cid(9), 0.75, sender=owner)
    assert repo.round_settlement(model_id, 0) == (True, 0, bytes(32))
    tx = repo.pay_round(model_id, 0, sender=owner)
    assert [e.args["to"] for e in tx.events] == list(mines[:3])
    with pytest.raises(ContractRevert, match="no such model"):
        repo.payees(model_id + 1, 0)


def test_a_settlement_must_be_signed_by_the_capsule_for_exactly_this_round(chain, repo):
    """Another key's signature, or the capsule's over another list, count, settlement, round,
    model, contract or chain, is refused; so is a settlement replayed on the next round."""
    owner, mines = owner_mines(chain)
    capsule, other = Account.create(), Account.create()
    model_id = post_capsule(repo, owner, capsule)
    twin = post_capsule(repo, owner, capsule)  # same capsule, another model
    other_repo = ModelRepository.deploy(chain)
    submit_all(repo, model_id, 0, mines[:3])
    summed = list(mines[:2])
    chain_id = chain.web3.eth.chain_id

    def refused(signature, *, round=0, considered=2, summed=summed, settlement=SETTLEMENT):
        with pytest.raises(ContractRevert) as caught:
            repo.settle_round(
                model_id,
                round,
                considered=considered,
                summed=summed,
                settlement=settlement,
                signature=signature,
                sender=mines[9],
            )
        return caught.value.reason

    not_signed = "settlement not signed by the model's capsule"
    assert refused(sign(other, repo, model_id, 0, 2, summed)) == not_signed
    assert refused(sign(capsule, repo, model_id, 0, 2, summed), summed=summed[:1]) == not_signed
    assert refused(sign(capsule, repo, model_id, 0, 2, summed), summed=summed[::-1]) == not_signed
    assert refused(sign(capsule, repo, model_id, 0, 2, summed), considered=3) == not_signed
    other_settlement = hashlib.sha256(b"another release").digest()
    signature = sign(capsule, repo, model_id, 0, 2, summed)
    assert refused(signature, settlement=other_settlement) == not_signed
    assert refused(sign(capsule, repo, model_id, 1, 2, summed)) == not_signed
    assert refused(sign(capsule, repo, twin, 0, 2, summed)) == not_signed
    assert refused(sign(capsule, other_repo, model_id, 0, 2, summed)) == not_signed
    wrong_chain = sign(capsule, repo, model_id, 0, 2, summed, chain_id=chain_id + 1)
    assert refused(wrong_chain) == not_signed
    assert refused(bytes(64) + bytes([27])) == not_signed  # ecrecover finds no signer
    assert refused(sign(capsule, repo, model_id, 1, 2, summed), round=1) == (
        "not the model's current round"
    )
    assert repo.round_settlement(model_id, 0) == (False, 0, bytes(32))

    signature = sign(capsule, repo, model_id, 0, 2, summed)
    repo.settle_round(
        model_id,
        0,
        considered=2,
        summed=summed,
        settlement=SETTLEMENT,
        signature=signature,
        sender=mines[9],
    )
    assert refused(signature) == "round already closed"
    repo.evaluate_round(model_id, 0, cid(9), 0.9, sender=owner)
    submit_all(repo, model_id, 1, mines[:3])
    assert refused(signature, round=1) == not_signed  # replayed on the next round
    assert repo.round_settlement(model_id, 1) == (False, 0, bytes(32))


def test_a_settlement_pays_only_considered_submitters_once_each(chain, repo):
    """A signed settlement still cannot count more submitters than there are, pay a late or
    absent address, or pay one address twice."""
    owner, mines = owner_mines(chain)
    capsule = Account.create()
    model_id = post_capsule(repo, owner, capsule)
    submit_all(repo, model_id, 0, mines[:3])
    for considered, summed, reason in [
        (4, list(mines[:3]), "considered exceeds the round's submitters"),
        (2, [mines[0], mines[2]], "summed address not considered"),  # mines[2] is late
        (3, [mines[0], mines[5]], "summed address not considered"),  # mines[5] never submitted
        (3, [mines[0], ZERO_ADDRESS], "summed address not considered"),
        (3, [mines[1], mines[0], mines[1]], "summed address repeated"),
    ]:
        with pytest.raises(ContractRevert, match=f"settle_round reverted: {reason}"):
            settle(repo, capsule, model_id, 0, considered, summed, sender=owner)
    with pytest.raises(ValueError, match="65 bytes"):
        repo.settle_round(
            model_id,
            0,
            considered=3,
            summed=[],
            settlement=SETTLEMENT,
            signature=b"\0" * 64,
            sender=owner,
        )
    with pytest.raises(ValueError, match="summed address is not an Ethereum address"):
        settlement_digest(1, repo.address, model_id, 0, 3, ["0x12"], SETTLEMENT)
    settle(repo, capsule, model_id, 0, 3, [mines[2]], sender=owner)
    assert repo.payees(model_id, 0) == [mines[2]]


def test_impersonating_the_capsule_on_anvil_does_not_settle(anvil_chain):
    """anvil lets any RPC client send from the capsule's address, so the contract trusts the
    signature only: a forged one sent from the impersonated capsule is refused on chain too."""
    chain = anvil_chain
    repo = ModelRepository.deploy(chain)
    owner, mines = owner_mines(chain)
    capsule, attacker = Account.create(), Account.create()
    model_id = post_capsule(repo, owner, capsule)
    submit_all(repo, model_id, 0, mines[:2])
    rpc = chain.web3.provider.make_request
    rpc("anvil_impersonateAccount", [capsule.address])
    try:
        rpc("anvil_setBalance", [capsule.address, hex(ETHER)])
        eth = chain.web3.eth
        sent = eth.send_transaction({"from": capsule.address, "to": owner, "value": 1})
        assert eth.wait_for_transaction_receipt(sent).status == 1  # the node lets us
        forged = sign(attacker, repo, model_id, 0, 2, [mines[0]])
        with pytest.raises(ContractRevert, match="settlement not signed by the model's capsule"):
            repo.settle_round(
                model_id,
                0,
                considered=2,
                summed=[mines[0]],
                settlement=SETTLEMENT,
                signature=forged,
                sender=capsule.address,
            )
        r, s, v = forged[:32], forged[32:64], forged[64]
        function = repo.contract.functions.settle_round(
            model_id, 0, 2, [mines[0]], SETTLEMENT, v, r, s
        )
        sent = function.transact({"from": capsule.address, "gas": GAS_LIMIT})
        assert eth.wait_for_transaction_receipt(sent).status == 0
    finally:
        rpc("anvil_stopImpersonatingAccount", [capsule.address])
    assert repo.round_settlement(model_id, 0) == (False, 0, bytes(32))
    settle(repo, capsule, model_id, 0, 2, [mines[0]], sender=mines[5])
    assert repo.payees(model_id, 0) == [mines[0]]


def test_settling_ten_summed_addresses_fits_its_gas(chain, repo):
    """Gas of a capsule round of 11 submitters of which 10 are summed and 1 is late."""
    owner, everyone = chain.accounts[0], chain.accounts[1:]
    capsule = Account.create()
    model_id = post_capsule(repo, owner, capsule)
    submit_all(repo, model_id, 0, everyone[:11])
    settle(repo, capsule, model_id, 0, 10, list(everyone[:10]), sender=owner)
    repo.evaluate_round(model_id, 0, cid(9), 0.75, sender=owner)
    tx = repo.pay_round(model_id, 0, sender=owner)
    assert len(tx.events) == 10
    gas = {call: used[-1] for call, used in repo.gas.items() if call != "submit_gradient"}
    print(f"\ncapsule model gas on {chain.name}: {gas}")
    # 13 storage words written (closed, considered, settlement, payees' length and 10
    # addresses) at ~22k each, 10 cold reads of `submitted`, one ecrecover.
    assert 350_000 < gas["settle_round"] < 400_000
    assert gas["evaluate_round"] < 250_000 and gas["pay_round"] < 250_000


def test_racing_duplicate_keeps_its_revert_reason(anvil_chain):
    """Two submissions mined in one block: the loser's reason is recovered by replaying it."""
    chain = anvil_chain
    repo = ModelRepository.deploy(chain)
    owner, mines = owner_mines(chain)
    model_id = post(repo, owner)
    rpc = chain.web3.provider.make_request
    rpc("evm_setAutomine", [False])
    try:
        repo.contract.functions.submit_gradient(model_id, 0, cid(1)).transact({"from": mines[0]})
        raised = []

        def second():
            with pytest.raises(ContractRevert) as caught:
                repo.submit_gradient(model_id, 0, cid(2), sender=mines[0])
            raised.append(caught.value)

        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 10
        while int(rpc("txpool_status", [])["result"]["pending"], 16) < 2:
            assert time.monotonic() < deadline, "the second submission never reached the pool"
            time.sleep(0.01)
        rpc("evm_mine", [])
        thread.join(10)
    finally:
        rpc("evm_setAutomine", [True])
    assert [str(e) for e in raised] == ["submit_gradient reverted: already submitted this round"]
    assert repo.gradient_cids(model_id, 0) == [cid(1)]


def test_another_process_reaches_anvil_through_its_url(anvil_chain):
    """A separate process connects by URL and reads what this one wrote."""
    repo = ModelRepository.deploy(anvil_chain)
    post(repo, anvil_chain.accounts[0])
    script = (
        "import sys\n"
        "from om_teach.sonar.chain import Chain\n"
        "from om_teach.sonar.contract import ModelRepository\n"
        "repo = ModelRepository.at(Chain.connect(sys.argv[1]), sys.argv[2])\n"
        "print(repo.model_cid(0))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, anvil_chain.node.url, repo.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == cid(0)


def test_anvil_node_is_stopped_by_its_pid():
    """Leaving the context ends the node's one process and removes its default log."""
    require_anvil()
    with AnvilNode() as node:
        pid, url, log = node.pid, node.url, node.log_path
        assert Chain.connect(url).web3.eth.chain_id == 31337
        os.kill(pid, 0)
        assert log.is_file()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not log.parent.exists()
    with pytest.raises(ConnectionError, match=url):
        Chain.connect(url)


def test_a_node_that_never_answers_times_out_naming_its_log(tmp_path):
    """A binary that starts but never serves JSON-RPC is stopped; the error names the log."""
    silent = tmp_path / "silent-node"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(0o755)
    node = AnvilNode(binary=silent, ready_timeout=0.5, log_path=tmp_path / "node.log")
    with pytest.raises(TimeoutError, match=r"did not answer .* see .*node\.log"):
        node.start()
    assert node.process is None
    crashing = AnvilNode(binary="/bin/false", log_path=tmp_path / "crash.log")
    with pytest.raises(RuntimeError, match=r"exited with code 1 .* see .*crash\.log"):
        crashing.start()


def test_unreachable_rpc_url_fails_fast_and_names_it():
    """Connecting where nothing listens raises ConnectionError with the URL, without a hang."""
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"no Ethereum JSON-RPC node answers at {url}"):
        Chain.connect(url)
    assert time.monotonic() - start < 5
    with pytest.raises(ValueError, match="http"):
        Chain.connect("127.0.0.1:8545")


def test_errors_are_fixed_point_millionths():
    """to_fixed scales by 10**6 and rounds; it refuses what is not a finite non-negative number."""
    assert to_fixed(0.4125) == 412_500 and to_fixed(1) == 1_000_000
    assert to_fixed(0.1 + 0.2) == 300_000
    for bad, error in [(-0.1, ValueError), (float("nan"), ValueError), ("1", TypeError)]:
        with pytest.raises(error):
            to_fixed(bad)
    with pytest.raises(TypeError):
        to_fixed(True)
