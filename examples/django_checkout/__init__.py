"""A Django shop whose checkouts are gen_durable flows (see README.md in this folder).

- :mod:`.shop.models`: the shop's own table (a Django model);
- :mod:`.shop.flows`: the ``Checkout`` FSM (reserve, await the payment, ship or expire);
- :mod:`.shop.views`: checkout, payment webhook, order status;
- :mod:`.settings`: the project, with ``gen_durable.contrib.django`` installed;
- ``manage.py gen_durable_run``: the process that runs the flows.
"""
