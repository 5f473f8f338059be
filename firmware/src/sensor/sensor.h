/* The sensor front end: eight thermistor channels read through a (simulated) 12-bit ADC. */
#ifndef SENSOR_H
#define SENSOR_H

#include <stdint.h>

#define SENSOR_CHANNELS 8

typedef struct {
    float gain;
    float offset_c;
} calibration_t;

typedef struct {
    uint32_t count;
    float mean_c;
    float m2; /* running sum of squared differences (Welford) */
    float min_c;
    float max_c;
} channel_stats_t;

uint16_t sensor_adc(unsigned channel, uint32_t tick);
float sensor_celsius(uint16_t counts);
float sensor_read(unsigned channel, uint32_t tick);
void sensor_calibrate(unsigned channel, float gain, float offset_c);
const calibration_t *sensor_calibration(unsigned channel);
const channel_stats_t *sensor_stats(unsigned channel);
float sensor_stddev(const channel_stats_t *stats);
void sensor_reset_stats(void);

#endif
