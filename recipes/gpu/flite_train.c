/* flite with the training voices only (kal, kal16, awb, rms): the same command line as
 * Debian's flite for what mho uses (-voice NAME --setf duration_stretch=X -t TEXT -o WAV),
 * but linked without the held-out test voice slt, so a bundle built from it cannot
 * synthesize test audio. Built by recipes/gpu/bundle.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "flite.h"

cst_voice *register_cmu_us_kal(const char *voxdir);
cst_voice *register_cmu_us_kal16(const char *voxdir);
cst_voice *register_cmu_us_awb(const char *voxdir);
cst_voice *register_cmu_us_rms(const char *voxdir);

int main(int argc, char **argv) {
    const char *voice_name = "kal16", *text = NULL, *out = NULL;
    float stretch = 1.0f;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-voice") && i + 1 < argc) voice_name = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) text = argv[++i];
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--setf") && i + 1 < argc) {
            const char *arg = argv[++i];
            if (strncmp(arg, "duration_stretch=", 17)) {
                fprintf(stderr, "flite_train: only duration_stretch can be set\n");
                return 2;
            }
            stretch = (float)atof(arg + 17);
        } else {
            fprintf(stderr, "flite_train: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!text || !out) {
        fprintf(stderr, "usage: flite_train -voice NAME [--setf duration_stretch=X] -t TEXT -o WAV\n");
        return 2;
    }
    flite_init();
    cst_voice *voice = NULL;
    if (!strcmp(voice_name, "kal")) voice = register_cmu_us_kal(NULL);
    else if (!strcmp(voice_name, "kal16")) voice = register_cmu_us_kal16(NULL);
    else if (!strcmp(voice_name, "awb")) voice = register_cmu_us_awb(NULL);
    else if (!strcmp(voice_name, "rms")) voice = register_cmu_us_rms(NULL);
    if (!voice) {
        fprintf(stderr, "flite_train: unknown voice %s (kal, kal16, awb, rms)\n", voice_name);
        return 1;
    }
    feat_set_float(voice->features, "duration_stretch", stretch);
    if (flite_text_to_speech(text, voice, out) <= 0) {
        fprintf(stderr, "flite_train: synthesis failed\n");
        return 1;
    }
    return 0;
}
