"""Applications built on the library: the segmentation benchmark runner (:mod:`.seg_eval`) and
the HTML report (:mod:`.report`), both driven by the ``vision-lens`` command line
(:mod:`vision_lens.cli`). Nothing below this layer imports it."""
