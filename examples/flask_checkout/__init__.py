"""A Flask shop whose checkouts are gen_durable flows (see README.md in this folder).

- :mod:`.orders`: the shop's own table;
- :mod:`.flows`: the ``Checkout`` FSM (reserve, await the payment, ship or expire);
- :mod:`.app`: the Flask app: checkout, payment webhook, order status;
- :mod:`.worker`: the process that runs the flows.
"""
