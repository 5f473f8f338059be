/* Lookup tables of the sensor firmware (tables.c). */
#ifndef TABLES_H
#define TABLES_H

#include <stdint.h>

#define THERMISTOR_POINTS 166
#define THERMISTOR_FIRST_C (-40)
#define SINE_POINTS 1024

extern const uint16_t thermistor_counts[THERMISTOR_POINTS];
extern const int16_t sine_q15[SINE_POINTS];
extern const uint16_t crc16_table[256];

#endif
