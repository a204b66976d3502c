"""PURE: split polysemantic neurons into virtual neurons by their circuits.

The method of Dreyer et al. (2024), *PURE: Turning Polysemantic Neurons Into Pure
Features by Identifying Relevant Circuits*, in the order the DAG runs it:

1. max-activation references of every neuron (:mod:`monoscope.references`, shared with
   the other unit kinds);
2. circuits: for each reference, the relevance of the lower layer's channels for the
   neuron (:mod:`~monoscope.pure.circuits`, on the sub-network of
   :mod:`monoscope.models.subnet`);
3. k-means of a neuron's circuits into k virtual neurons (:mod:`~monoscope.pure.clustering`,
   :mod:`~monoscope.pure.virtual_neurons`);
4. relevance crops and their embeddings (:mod:`monoscope.crops`, :mod:`monoscope.embedders`,
   shared with SAE features);
5. semantic distances, alignment of circuit space with the embedders' spaces, and
   purity (:mod:`~monoscope.pure.metrics`).
"""
