"""Built-in dataset sources, one module per source; each registers its loaders with
:func:`~fastunlearn.data._registry.register_dataset` when imported.

``fastunlearn/data/__init__.py`` imports every module here (as timm's ``models`` package does),
so ``load_dataset("mnist")`` works as soon as ``fastunlearn.data`` is imported. This package's
own ``__init__`` imports nothing, and :mod:`fastunlearn.data._registry` never imports its users.

========================  ==============================================================
module                    datasets
========================  ==============================================================
:mod:`.idx`               ``mnist``, ``fashion-mnist`` (idx files)
:mod:`.cifar`             ``cifar10``, ``cifar100`` (torchvision's pickled batches)
:mod:`.digits`            ``digits`` (scikit-learn, bundled)
:mod:`.synthetic`         ``synthetic`` (seeded prototypes, for tests)
:mod:`.imagefolder`       ``imagefolder:PATH`` (class sub-folders of image files)
:mod:`.subsets`           ``fashion-mnist-10k`` and :func:`~.subsets.class_balanced_subset`
========================  ==============================================================

Every loader takes ``root=None, download=False, augment=None`` (plus its own keyword arguments)
and returns an :class:`~fastunlearn.data.base.ImageDataset` holding uint8 ``[N, C, H, W]``
images and int64 labels. Nothing is downloaded unless ``download=True``; a missing dataset
raises :class:`~fastunlearn.data._registry.DatasetNotFoundError` with a one-line hint. Heavy
optional dependencies (torchvision, scikit-learn, PIL) are imported inside the loaders.
"""
