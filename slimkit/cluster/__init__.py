"""Weight sharing and Deep Compression: k-means codebooks, shared-centroid fine-tuning and Huffman coding.

The maths is pure (:mod:`~slimkit.cluster.kmeans`, :mod:`~slimkit.cluster.huffman`,
:mod:`~slimkit.cluster.streams`); the methods ``cluster.kmeans``, ``cluster.finetune`` and
``cluster.huffman`` orchestrate it; the ``codebook`` and ``huffman`` codecs store the result in the
slimkit format. Reference: Han, Mao & Dally, "Deep Compression", ICLR 2016.
"""
