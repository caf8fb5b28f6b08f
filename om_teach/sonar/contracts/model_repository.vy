# pragma version ~=0.4.3
"""
@title ModelRepository: bounties for federated training, paid by improvement
@notice Reproduces the contract of OpenMined's Sonar (Hydrogen milestone). A data scientist
        posts a model with a bounty; data owners ("mines") submit the IPFS CIDs of their
        encrypted gradients round by round; the scientist records each round's new model and
        its error, and pays that round's contributors by the improvement it brought. A model
        may also be bound to a capsule (Helium milestone), whose signed settlement of each
        round decides whom the round pays.
@dev    Units:
        - errors are fixed-point unsigned integers scaled by 10**6 (ERROR_SCALE): an error of
          0.4125 is passed as 412500. Lower is better.
        - bounty and payouts are in wei.
        - CIDs are strings of 1 to 64 characters (CIDv0 is 46, CIDv1 base32 is 59).
        One deployment holds many models, numbered 0, 1, 2, ... in posting order; each model
        has its own owner, bounty escrow and rounds, numbered from 0.

        Payout rule: OpenMined's bounty * (best - new) / (initial - target), with both errors
        floored at the target, so that improvement below the target is not paid for:
            owed = bounty * (max(best_before, target) - max(new_error, target))
                   // (initial_error - target_error)
        where best_before is the best error when the round was evaluated; a round that does not
        improve on it is owed nothing. The owed amounts of all rounds therefore sum to at most
        the bounty. A round's owed amount is split equally among its payees (the at most 64
        addresses that submitted in it, or for a capsule model those the capsule summed, see
        below), each getting owed // payees; both divisions round down and the wei left over
        stay in the escrow. Sonar's own contract divided by the best error and never debited
        the bounty, so its payouts could spend other models' ether; here each model's escrow
        is debited and a payout beyond it reverts, which happens once the owner has withdrawn
        what was left (withdraw_bounty).

        Payments are pushed: pay_round sends each contributor its share with `send`, which
        forwards only the 2300-gas stipend, so a recipient cannot re-enter. The function is
        also @nonreentrant and follows checks-effects-interactions: the round is marked paid
        and the escrow debited before any ether moves. A contributor that refuses ether (a
        contract whose fallback reverts) makes the whole payout revert: acceptable for a demo
        whose mines are externally owned accounts; a production contract would let each
        contributor withdraw its own balance instead (pull payments).

        Capsule models (Sonar's Helium milestone). A model posted with a `capsule` (the address
        of the key the capsule signs with) and `capsule_record` (the SHA-256 fingerprint of the
        capsule's key record, for anyone to check against the record the capsule publishes)
        only pays the addresses whose gradients the capsule actually summed. Its round closes
        when anyone sends settle_round with the capsule's signature over
            keccak256(abi_encode(SETTLEMENT_TAG, chain.id, self, model_id, round, considered,
                                 summed, settlement))
        (a raw hash, no EIP-191 prefix): `considered` is how many of the round's first
        submitters the capsule read, `summed` the addresses it summed (each among those
        `considered`, none twice), `settlement` a 32-byte digest of the capsule's own record of
        the release. The contract checks the signature with ecrecover, not msg.sender: on a
        development chain any RPC client may send from the node's unlocked accounts, and on
        anvil from any address at all, the capsule's included (anvil_impersonateAccount), so
        "sent from the capsule" would prove nothing. The digest binds the chain, this
        deployment, the model, the round, `considered`, the list and `settlement`, so a
        signature cannot be replayed elsewhere, and a round settles once. Once settled the
        round takes no more gradients; the owner may then evaluate it, and pay_round pays
        `summed` only: neither the submitters the capsule left out nor the late ones, past
        `considered`. A model posted without a capsule (the empty address: a Hydrogen model)
        never settles, and pays all its round's submitters as before.

        Trust: the owner reports its own errors and decides when to pay, as in Sonar; the
        contract guarantees only the arithmetic, the escrow, and who may call what. For a
        capsule model it also guarantees that only the capsule's key decides who is paid.
"""

MAX_CONTRIBUTORS: constant(uint256) = 64
ERROR_SCALE: public(constant(uint256)) = 10**6
SETTLEMENT_TAG: public(constant(bytes32)) = keccak256("om-teach/sonar-settlement/1")


struct Model:
    owner: address
    cid: String[64]
    bounty: uint256
    remaining: uint256
    initial_error: uint256
    target_error: uint256
    best_error: uint256
    current_round: uint256
    capsule: address  # empty for a Hydrogen model
    capsule_record: bytes32  # SHA-256 of the capsule's key record; empty without a capsule


struct Round:
    cids: DynArray[String[64], MAX_CONTRIBUTORS]
    submitters: DynArray[address, MAX_CONTRIBUTORS]
    evaluated: bool
    paid: bool
    model_cid: String[64]
    error: uint256
    best_before: uint256
    closed: bool  # settled by the capsule (capsule models only; see round_settlement)
    considered: uint256  # how many of the first submitters the capsule read
    payees: DynArray[address, MAX_CONTRIBUTORS]  # whom the capsule summed
    settlement: bytes32  # the capsule's digest of its release


event ModelPosted:
    model_id: indexed(uint256)
    owner: indexed(address)
    cid: String[64]
    bounty: uint256
    initial_error: uint256
    target_error: uint256
    capsule: address
    capsule_record: bytes32


event GradientSubmitted:
    model_id: indexed(uint256)
    round: indexed(uint256)
    submitter: indexed(address)
    cid: String[64]


event RoundSettled:
    model_id: indexed(uint256)
    round: indexed(uint256)
    settlement: bytes32
    summed: uint256
    late: uint256


event RoundEvaluated:
    model_id: indexed(uint256)
    round: indexed(uint256)
    cid: String[64]
    error: uint256
    improved: bool


event Paid:
    model_id: indexed(uint256)
    round: indexed(uint256)
    to: indexed(address)
    amount: uint256


event BountyWithdrawn:
    model_id: indexed(uint256)
    owner: indexed(address)
    amount: uint256


model_count: public(uint256)
models: HashMap[uint256, Model]
rounds: HashMap[uint256, HashMap[uint256, Round]]
# an address's position among a round's submitters, counted from 1; 0 if it did not submit
submitted: HashMap[uint256, HashMap[uint256, HashMap[address, uint256]]]


@internal
@view
def _check_model(model_id: uint256):
    assert model_id < self.model_count, "no such model"


@internal
@pure
def _check_cid(cid: String[64]):
    assert len(cid) > 0, "empty CID"


@external
@payable
def post_model(
    cid: String[64],
    initial_error: uint256,
    target_error: uint256,
    capsule: address = empty(address),
    capsule_record: bytes32 = empty(bytes32),
) -> uint256:
    """
    @notice Post a model whose bounty is the ether sent; the caller becomes its owner.
    @param capsule The address of the capsule's signing key, whose signature alone settles
           the model's rounds; empty for a Hydrogen model.
    @param capsule_record The SHA-256 fingerprint of the capsule's key record; empty exactly
           when `capsule` is.
    @return The new model's id.
    """
    self._check_cid(cid)
    assert msg.value > 0, "bounty must be positive"
    assert target_error < initial_error, "target error must be below the initial error"
    if capsule == empty(address):
        assert capsule_record == empty(bytes32), "a capsule record needs a capsule"
    else:
        assert capsule_record != empty(bytes32), "a capsule needs its record's fingerprint"
    model_id: uint256 = self.model_count
    self.models[model_id] = Model(
        owner=msg.sender,
        cid=cid,
        bounty=msg.value,
        remaining=msg.value,
        initial_error=initial_error,
        target_error=target_error,
        best_error=initial_error,
        current_round=0,
        capsule=capsule,
        capsule_record=capsule_record,
    )
    self.model_count = model_id + 1
    log ModelPosted(
        model_id=model_id,
        owner=msg.sender,
        cid=cid,
        bounty=msg.value,
        initial_error=initial_error,
        target_error=target_error,
        capsule=capsule,
        capsule_record=capsule_record,
    )
    return model_id


@external
def submit_gradient(model_id: uint256, round: uint256, cid: String[64]):
    """
    @notice Submit the CID of an encrypted gradient for the model's current round; one per
            address per round, until the round is full or settled.
    """
    self._check_model(model_id)
    self._check_cid(cid)
    assert round == self.models[model_id].current_round, "not the model's current round"
    assert self.submitted[model_id][round][msg.sender] == 0, "already submitted this round"
    assert not self.rounds[model_id][round].closed, "round closed"
    count: uint256 = len(self.rounds[model_id][round].submitters)
    assert count < MAX_CONTRIBUTORS, "round is full"
    self.submitted[model_id][round][msg.sender] = count + 1
    self.rounds[model_id][round].submitters.append(msg.sender)
    self.rounds[model_id][round].cids.append(cid)
    log GradientSubmitted(model_id=model_id, round=round, submitter=msg.sender, cid=cid)


@external
def settle_round(
    model_id: uint256,
    round: uint256,
    considered: uint256,
    summed: DynArray[address, MAX_CONTRIBUTORS],
    settlement: bytes32,
    v: uint8,
    r: bytes32,
    s: bytes32,
):
    """
    @notice Close a capsule model's current round on the capsule's signed settlement: the
            round takes no more gradients and will pay `summed` only. Anyone may send it;
            the signature, not the sender, authorises it.
    @param considered How many of the round's first submitters the capsule read.
    @param summed The addresses whose gradients the capsule summed, each among the first
           `considered` submitters, none twice.
    @param settlement The capsule's 32-byte digest of its release, stored and logged as is.
    @param v The signature's recovery id (27 or 28), with `r` and `s` its two halves, over
           keccak256(abi_encode(SETTLEMENT_TAG, chain.id, self, model_id, round, considered,
           summed, settlement)) by the model's capsule key.
    """
    self._check_model(model_id)
    capsule: address = self.models[model_id].capsule
    assert capsule != empty(address), "the model has no capsule"
    assert round == self.models[model_id].current_round, "not the model's current round"
    assert not self.rounds[model_id][round].closed, "round already closed"
    submitters: uint256 = len(self.rounds[model_id][round].submitters)
    assert considered <= submitters, "considered exceeds the round's submitters"
    assert len(summed) > 0, "a settlement sums at least one gradient"
    seen: uint256 = 0  # bit i set: the submitter at position i is in summed
    for payee: address in summed:
        position: uint256 = self.submitted[model_id][round][payee]
        assert position != 0 and position <= considered, "summed address not considered"
        bit: uint256 = 1 << position
        assert seen & bit == 0, "summed address repeated"
        seen |= bit
    digest: bytes32 = keccak256(
        abi_encode(
            SETTLEMENT_TAG, chain.id, self, model_id, round, considered, summed, settlement
        )
    )
    signer: address = ecrecover(digest, v, r, s)
    assert signer == capsule, "settlement not signed by the model's capsule"
    self.rounds[model_id][round].closed = True
    self.rounds[model_id][round].considered = considered
    self.rounds[model_id][round].payees = summed
    self.rounds[model_id][round].settlement = settlement
    log RoundSettled(
        model_id=model_id,
        round=round,
        settlement=settlement,
        summed=len(summed),
        late=submitters - considered,
    )


@external
def evaluate_round(model_id: uint256, round: uint256, cid: String[64], error: uint256):
    """
    @notice Record the model the round's gradients produced (its CID) and its error, and open
            the next round. Owner only; a capsule model's round must be settled first.
    """
    self._check_model(model_id)
    assert msg.sender == self.models[model_id].owner, "only the model's owner may evaluate"
    self._check_cid(cid)
    assert round == self.models[model_id].current_round, "not the model's current round"
    if self.models[model_id].capsule == empty(address):
        assert len(self.rounds[model_id][round].submitters) > 0, "no gradients in this round"
    else:
        assert self.rounds[model_id][round].closed, "round not settled by the capsule"
        assert len(self.rounds[model_id][round].payees) > 0, "no gradients in this round"
    best: uint256 = self.models[model_id].best_error
    improved: bool = error < best
    self.rounds[model_id][round].evaluated = True
    self.rounds[model_id][round].model_cid = cid
    self.rounds[model_id][round].error = error
    self.rounds[model_id][round].best_before = best
    if improved:
        self.models[model_id].best_error = error
        self.models[model_id].cid = cid
    self.models[model_id].current_round = round + 1
    log RoundEvaluated(model_id=model_id, round=round, cid=cid, error=error, improved=improved)


@internal
@view
def _payees(model_id: uint256, round: uint256) -> DynArray[address, MAX_CONTRIBUTORS]:
    # A Hydrogen round pays all its submitters; copying them into `payees` would cost
    # ~20k gas an address, so they are read where they are.
    if self.models[model_id].capsule == empty(address):
        return self.rounds[model_id][round].submitters
    return self.rounds[model_id][round].payees


@internal
@view
def _owed(model_id: uint256, round: uint256) -> uint256:
    assert self.rounds[model_id][round].evaluated, "round not evaluated"
    target: uint256 = self.models[model_id].target_error
    floor_before: uint256 = max(self.rounds[model_id][round].best_before, target)
    floor_after: uint256 = max(self.rounds[model_id][round].error, target)
    if floor_after >= floor_before:
        return 0
    span: uint256 = self.models[model_id].initial_error - target
    return self.models[model_id].bounty * (floor_before - floor_after) // span


@external
@view
def round_payout(model_id: uint256, round: uint256) -> uint256:
    """
    @notice What an evaluated round is owed in total, before the equal split (wei).
    """
    self._check_model(model_id)
    return self._owed(model_id, round)


@external
@nonreentrant
def pay_round(model_id: uint256, round: uint256):
    """
    @notice Pay an evaluated round's payees (a Hydrogen round's submitters, a capsule round's
            summed addresses) their equal shares of what the round is owed. Owner only; once
            per round; a round without improvement pays nothing.
    """
    self._check_model(model_id)
    assert msg.sender == self.models[model_id].owner, "only the model's owner may pay"
    owed: uint256 = self._owed(model_id, round)
    assert not self.rounds[model_id][round].paid, "round already paid"
    contributors: DynArray[address, MAX_CONTRIBUTORS] = self._payees(model_id, round)
    share: uint256 = owed // len(contributors)
    total: uint256 = share * len(contributors)
    remaining: uint256 = self.models[model_id].remaining
    assert total <= remaining, "payout exceeds remaining bounty"
    self.rounds[model_id][round].paid = True
    self.models[model_id].remaining = remaining - total
    if share == 0:
        return
    for to: address in contributors:
        send(to, share)
        log Paid(model_id=model_id, round=round, to=to, amount=share)


@external
@nonreentrant
def withdraw_bounty(model_id: uint256):
    """
    @notice Return the escrow that is left to the owner, ending the model's payouts. Owner only.
    """
    self._check_model(model_id)
    owner: address = self.models[model_id].owner
    assert msg.sender == owner, "only the model's owner may withdraw"
    amount: uint256 = self.models[model_id].remaining
    assert amount > 0, "nothing left to withdraw"
    self.models[model_id].remaining = 0
    send(owner, amount)
    log BountyWithdrawn(model_id=model_id, owner=owner, amount=amount)


@external
@view
def model_info(model_id: uint256) -> Model:
    """
    @notice Everything about a model: owner, best model's CID, bounty, escrow left, errors,
            current round, capsule and its record's fingerprint (both empty for Hydrogen).
    """
    self._check_model(model_id)
    return self.models[model_id]


@external
@view
def current_round(model_id: uint256) -> uint256:
    self._check_model(model_id)
    return self.models[model_id].current_round


@external
@view
def model_cid(model_id: uint256) -> String[64]:
    """
    @notice The CID of the best model so far (the posted one until a round improves on it).
    """
    self._check_model(model_id)
    return self.models[model_id].cid


@external
@view
def best_error(model_id: uint256) -> uint256:
    self._check_model(model_id)
    return self.models[model_id].best_error


@external
@view
def remaining_bounty(model_id: uint256) -> uint256:
    self._check_model(model_id)
    return self.models[model_id].remaining


@external
@view
def gradient_cids(model_id: uint256, round: uint256) -> DynArray[String[64], MAX_CONTRIBUTORS]:
    return self.rounds[model_id][round].cids


@external
@view
def submitters(model_id: uint256, round: uint256) -> DynArray[address, MAX_CONTRIBUTORS]:
    return self.rounds[model_id][round].submitters


@external
@view
def round_result(model_id: uint256, round: uint256) -> (String[64], uint256, bool, bool):
    """
    @notice A round's new model CID, its error, whether it was evaluated, whether it was paid.
    """
    r: Round = self.rounds[model_id][round]
    return r.model_cid, r.error, r.evaluated, r.paid


@external
@view
def payees(model_id: uint256, round: uint256) -> DynArray[address, MAX_CONTRIBUTORS]:
    """
    @notice Whom pay_round pays: a Hydrogen round's submitters, a capsule round's summed
            addresses (none until it is settled).
    """
    self._check_model(model_id)
    return self._payees(model_id, round)


@external
@view
def round_settlement(model_id: uint256, round: uint256) -> (bool, uint256, bytes32):
    """
    @notice A round's settlement: whether it is closed to gradients (a capsule round once
            settled, a Hydrogen round once evaluated), how many submitters the capsule
            considered and its settlement digest (0 and empty for a Hydrogen round).
    @dev    A Hydrogen round is not marked closed in storage: evaluate_round moves its model
            to the next round, which already refuses gradients for it, and the flag would
            cost its evaluation ~20k gas.
    """
    self._check_model(model_id)
    return (
        self.rounds[model_id][round].closed or self.rounds[model_id][round].evaluated,
        self.rounds[model_id][round].considered,
        self.rounds[model_id][round].settlement,
    )
