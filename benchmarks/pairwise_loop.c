/*
 * Scalar baseline for the c2lite PairWiseLoss benchmark.
 *
 * This is a plain C rendering of the original operator's loops
 * (reference section 6): for every session, i runs over the session,
 * j over the items before i, pairs whose labels differ by less than
 * FLT_EPSILON are skipped, the sign is taken from the label order, and
 * the loss / gradient is accumulated in single precision, exactly as the
 * original float kernel does.  It is compiled with the system compiler at
 * benchmark time and called through ctypes.
 *
 * Lengths are int32, as the original op reads them; lengths == NULL means
 * one session of n items.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>

static float log_logit(float z, float k_min)
{
    if (z < k_min) {
        return 0.0f;
    }
    if (z > -k_min) {
        return z;
    }
    return logf(expf(z) + 1.0f);
}

void pairwise_loss_forward(const float *x, const float *label,
                           const int32_t *lengths, int64_t n_sessions,
                           int64_t n, float *y)
{
    const float k_min = logf(FLT_EPSILON);
    int64_t start = 0;
    for (int64_t s = 0; s < n_sessions; ++s) {
        const int64_t len = lengths ? (int64_t)lengths[s] : n;
        float acc = 0.0f;
        int64_t n_pairs = 0;
        for (int64_t i = start; i < start + len; ++i) {
            for (int64_t j = start; j < i; ++j) {
                if (fabsf(label[i] - label[j]) < FLT_EPSILON) {
                    continue;
                }
                ++n_pairs;
                const float sign = label[i] > label[j] ? 1.0f : -1.0f;
                acc += log_logit(sign * (x[j] - x[i]), k_min);
            }
        }
        if (n_pairs > 0) {
            acc /= (float)n_pairs;
        }
        y[s] = acc;
        start += len;
    }
}

void pairwise_loss_gradient(const float *x, const float *label,
                            const float *dy, const int32_t *lengths,
                            int64_t n_sessions, int64_t n, float *dx)
{
    for (int64_t k = 0; k < n; ++k) {
        dx[k] = 0.0f;
    }
    int64_t start = 0;
    for (int64_t s = 0; s < n_sessions; ++s) {
        const int64_t len = lengths ? (int64_t)lengths[s] : n;
        int64_t n_pairs = 0;
        for (int64_t i = start; i < start + len; ++i) {
            for (int64_t j = start; j < i; ++j) {
                if (fabsf(label[i] - label[j]) < FLT_EPSILON) {
                    continue;
                }
                ++n_pairs;
                const float sign = label[i] > label[j] ? 1.0f : -1.0f;
                const float g =
                    sign * dy[s] / (1.0f + expf(-sign * (x[j] - x[i])));
                dx[i] -= g;
                dx[j] += g;
            }
        }
        if (n_pairs > 0) {
            for (int64_t k = start; k < start + len; ++k) {
                dx[k] /= (float)n_pairs;
            }
        }
        start += len;
    }
}
