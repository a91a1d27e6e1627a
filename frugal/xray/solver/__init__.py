"""The pure core of SUSHI (:func:`frugal.xray.sushi`, :func:`frugal.xray.fit_pixels`): jitted,
vmapped functions of the solver's state, one module per piece of the algorithm documented in
:mod:`frugal.xray.sushi`.

``cube``        the static description, the state, the mixture, the data term and the objective;
``data_step``   the per-pixel Levenberg-Marquardt step with the bounds in the subproblem;
``prox_step``   the starlet prox, its l1 weights and the first-order optimality test;
``amplitudes``  the amplitude sweeps (damped Newton, EM);
``loop``        the sweeps and their stopping test, the cold-start grid, the batched programs;
``inputs``      the arguments checked and turned into the solver's data;
``results``     :class:`SushiResult`, the goodness of fit and the maps assembled from the state.
"""
