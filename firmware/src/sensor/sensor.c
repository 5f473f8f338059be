/* Thermistor channels: ADC counts to degrees through the lookup table, calibration, running statistics.
 *
 * There is no ADC in QEMU's STM32F100, so sensor_adc() synthesises the counts a real front end would
 * read: each channel follows a slow sine around its own temperature, with a little deterministic noise.
 */
#include "sensor.h"

#include <math.h>

#include "tables.h"

static calibration_t calibration[SENSOR_CHANNELS] = {
    {1.0f, 0.0f}, {1.0f, 0.0f}, {1.0f, 0.0f}, {1.0f, 0.0f},
    {1.0f, 0.0f}, {1.0f, 0.0f}, {1.0f, 0.0f}, {1.0f, 0.0f},
};
static channel_stats_t stats[SENSOR_CHANNELS];

static uint32_t noise(uint32_t seed)
{
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    return seed;
}

uint16_t sensor_adc(unsigned channel, uint32_t tick)
{
    float base_c = 18.0f + 2.5f * (float)channel;
    float swing = (float)sine_q15[(tick * 7u + channel * 128u) % SINE_POINTS] / 32768.0f;
    float celsius = base_c + 4.0f * swing + (float)(noise(tick * 31u + channel) % 100u) / 400.0f;
    /* The inverse of the table: the divider's counts for that temperature (beta model). */
    float kelvin = celsius + 273.15f;
    float ohms = 10000.0f * expf(3950.0f * (1.0f / kelvin - 1.0f / 298.15f));
    return (uint16_t)lroundf(4095.0f * ohms / (ohms + 10000.0f));
}

float sensor_celsius(uint16_t counts)
{
    /* The counts fall as the temperature rises: find the two points around `counts`. */
    if (counts >= thermistor_counts[0]) {
        return (float)THERMISTOR_FIRST_C;
    }
    if (counts <= thermistor_counts[THERMISTOR_POINTS - 1]) {
        return (float)(THERMISTOR_FIRST_C + THERMISTOR_POINTS - 1);
    }
    unsigned low = 0, high = THERMISTOR_POINTS - 1;
    while (high - low > 1) {
        unsigned middle = (low + high) / 2;
        if (thermistor_counts[middle] > counts) {
            low = middle;
        } else {
            high = middle;
        }
    }
    unsigned span = (unsigned)(thermistor_counts[low] - thermistor_counts[high]);
#ifdef SENSOR_FIX_INTERPOLATION
    /* 2.0.1: the fraction of a degree between the two points. */
    float fraction = (float)(thermistor_counts[low] - counts) / (float)span;
#else
    /* 2.0.0 shipped with an integer division here: every reading was rounded down to a whole degree. */
    float fraction = (float)((thermistor_counts[low] - counts) / span);
#endif
    return (float)(THERMISTOR_FIRST_C + (int)low) + fraction;
}

float sensor_read(unsigned channel, uint32_t tick)
{
    const calibration_t *cal = &calibration[channel % SENSOR_CHANNELS];
    float celsius = cal->gain * sensor_celsius(sensor_adc(channel, tick)) + cal->offset_c;
    channel_stats_t *s = &stats[channel % SENSOR_CHANNELS];
    s->count++;
    float delta = celsius - s->mean_c;
    s->mean_c += delta / (float)s->count;
    s->m2 += delta * (celsius - s->mean_c);
    if (s->count == 1 || celsius < s->min_c) {
        s->min_c = celsius;
    }
    if (s->count == 1 || celsius > s->max_c) {
        s->max_c = celsius;
    }
    return celsius;
}

void sensor_calibrate(unsigned channel, float gain, float offset_c)
{
    calibration[channel % SENSOR_CHANNELS] = (calibration_t){gain, offset_c};
}

const calibration_t *sensor_calibration(unsigned channel)
{
    return &calibration[channel % SENSOR_CHANNELS];
}

const channel_stats_t *sensor_stats(unsigned channel)
{
    return &stats[channel % SENSOR_CHANNELS];
}

float sensor_stddev(const channel_stats_t *s)
{
    return s->count > 1 ? sqrtf(s->m2 / (float)(s->count - 1)) : 0.0f;
}

void sensor_reset_stats(void)
{
    for (unsigned i = 0; i < SENSOR_CHANNELS; i++) {
        stats[i] = (channel_stats_t){0};
    }
}
