"""The seeded synthetic benchmarks the embedded default runs on: scenes of coloured shapes with
captions, VQA, SNLI-VE and VCR items whose truth the generator knows (images.py, from scenes.py
and language.py), and clips of shapes that move, appear or change colour (video.py). Both write
the manifests of vldistill.data.manifest, so everything downstream reads them as real data."""
