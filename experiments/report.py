"""Turn a study directory into results.md, results.tex and figures.

    python -m experiments.report studies/conv_variants

The table has one row per configuration (the config fields that differ between runs, seeds
pooled): test accuracy mean ± std over seeds, the number of seeds, parameters, multiply-adds per
example, training images/s, and the published value with its source where one exists.
"""

from absl import app, flags

from cnn_jax.report import write_report


def define_flags():
    """The command's flags (defined when it runs, not on import); returns its main."""
    factors = flags.DEFINE_list("factors", None, "config fields to group by; default: those that vary")

    def main(argv):
        if len(argv) != 2:
            raise app.UsageError("usage: python -m experiments.report STUDY_DIR")
        print(write_report(argv[1], factors.value))
        print(f"wrote {argv[1]}/results.md, results.tex and learning_curves.png")

    return main


if __name__ == "__main__":
    app.run(define_flags())
