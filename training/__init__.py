"""The training core that every caller shares: the stages, the tuner, the bench and the tests.

- `specs`: what each training stage is (views, loss terms, where it starts from, which
  config fields decide it), as data instead of branches on a stage's name.
- `builders`: small functions from (config, spec, ...) to inputs, model, losses, optimizer.
- `run_context`: precision policy, seeds and Keras session set on entry, restored on exit.
- `fit`: the one place a model is trained, with the callbacks every run needs: resume,
  divergence stop, CSV and TensorBoard logs, throughput.
- `distributed_loop`: the training loop behind `fit`, under any tf.distribute strategy.
- `distribute`: the strategy `config.train.strategy` names, and which worker writes what.
"""
