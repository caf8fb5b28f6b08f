"""Sonar, OpenMined's Hydrogen milestone: federated training paid for through a smart contract.

A data scientist posts a model's CID with a bounty to the ModelRepository contract; data
owners ("mines") each submit the CID of their Paillier-encrypted gradient for the round; the
gradients are summed homomorphically and only the sum is decrypted; the scientist records the
round's new model and error, and the contract pays the round's contributors by improvement.

Modules: ``chain`` (eth-tester in this process, a local anvil node, or any JSON-RPC URL),
``contract`` (the Vyper contract, compiled in-process, and its client), ``model`` (the linear
model and its bundle format), ``mine`` (a data owner, one process each), ``scientist`` (posts,
aggregates, evaluates, pays), ``capsule`` (Helium's key holder, with differential privacy),
``platform`` (everything in one process, or as separate processes) and ``cli``
(``om-teach sonar demo|up|down``). Nothing is imported here: web3 and the Vyper compiler take
seconds to load.
"""
