"""The real-photos ImageFolder from the photos registry packages ship (monoscope.photos)."""

from monoscope.logs import setup_logging
from monoscope.photos import build_photo_folder

setup_logging(snakemake.log[0])
build_photo_folder(
    snakemake.output.folder, copies=snakemake.params.copies, seed=snakemake.params.seed
)
