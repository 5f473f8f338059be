/* The command shell on the console: one line at a time, a table of commands. */
#include "shell.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sensor.h"
#include "tables.h"

typedef struct {
    const char *name;
    const char *usage;
    void (*run)(int argc, char **argv);
} command_t;

static uint32_t ticks;

static void cmd_help(int argc, char **argv);

static void cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("%s\n", shell_banner());
}

static void cmd_read(int argc, char **argv)
{
    int samples = argc > 1 ? atoi(argv[1]) : 1;
    for (int n = 0; n < samples; n++, ticks++) {
        printf("%6lu", (unsigned long)ticks);
        for (unsigned ch = 0; ch < SENSOR_CHANNELS; ch++) {
            printf(" %7.2f", (double)sensor_read(ch, ticks));
        }
        printf("\n");
    }
}

static void cmd_stats(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("ch   count     mean   stddev      min      max\n");
    for (unsigned ch = 0; ch < SENSOR_CHANNELS; ch++) {
        const channel_stats_t *s = sensor_stats(ch);
        printf("%2u %7lu %8.3f %8.3f %8.3f %8.3f\n", ch, (unsigned long)s->count, (double)s->mean_c,
               (double)sensor_stddev(s), (double)s->min_c, (double)s->max_c);
    }
}

static void cmd_reset(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    sensor_reset_stats();
    printf("statistics cleared\n");
}

static void cmd_cal(int argc, char **argv)
{
    if (argc == 1) {
        for (unsigned ch = 0; ch < SENSOR_CHANNELS; ch++) {
            const calibration_t *cal = sensor_calibration(ch);
            printf("%u gain %.5f offset %+.3f C\n", ch, (double)cal->gain, (double)cal->offset_c);
        }
        return;
    }
    unsigned channel;
    float gain, offset;
    if (argc != 4 || sscanf(argv[1], "%u", &channel) != 1 || sscanf(argv[2], "%f", &gain) != 1 ||
        sscanf(argv[3], "%f", &offset) != 1 || channel >= SENSOR_CHANNELS) {
        printf("usage: cal [CHANNEL GAIN OFFSET]\n");
        return;
    }
    sensor_calibrate(channel, gain, offset);
    printf("channel %u: gain %g, offset %g C\n", channel, (double)gain, (double)offset);
}

static void cmd_raw(int argc, char **argv)
{
    unsigned channel = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 0) : 0;
    uint16_t counts = sensor_adc(channel, ticks);
    printf("channel %u: %u counts = %.3f C\n", channel, counts, (double)sensor_celsius(counts));
}

static void cmd_crc(int argc, char **argv)
{
    uint16_t crc = 0xFFFF;
    for (int i = 1; i < argc; i++) {
        for (const char *p = argv[i]; *p; p++) {
            crc = (uint16_t)((crc << 8) ^ crc16_table[((crc >> 8) ^ (uint8_t)*p) & 0xFFu]);
        }
    }
    printf("CRC-16/CCITT-FALSE 0x%04X\n", crc);
}

static void cmd_wave(int argc, char **argv)
{
    double hertz = argc > 1 ? strtod(argv[1], NULL) : 50.0;
    printf("excitation %.1f Hz: ", hertz);
    for (unsigned i = 0; i < 8; i++) {
        printf("%d ", sine_q15[(unsigned)(hertz * i * 8.0) % SINE_POINTS]);
    }
    printf("\n");
}

static const command_t commands[] = {
    {"help", "help                       this list", cmd_help},
    {"version", "version                    the firmware's banner", cmd_version},
    {"read", "read [N]                   N readings of every channel, in C", cmd_read},
    {"stats", "stats                      count, mean, stddev, min, max per channel", cmd_stats},
    {"reset", "reset                      clear the statistics", cmd_reset},
    {"cal", "cal [CH GAIN OFFSET]       show or set a channel's calibration", cmd_cal},
    {"raw", "raw [CH]                   one channel's ADC counts", cmd_raw},
    {"crc", "crc TEXT...                CRC-16 of the text (the data log's checksum)", cmd_crc},
    {"wave", "wave [HZ]                  the excitation waveform's first samples", cmd_wave},
};

static void cmd_help(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        printf("  %s\n", commands[i].usage);
    }
}

void shell_execute(char *line)
{
    char *argv[8];
    int argc = 0;
    for (char *token = strtok(line, " \t"); token != NULL && argc < 8; token = strtok(NULL, " \t")) {
        argv[argc++] = token;
    }
    if (argc == 0) {
        return;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[0], commands[i].name) == 0) {
            commands[i].run(argc, argv);
            return;
        }
    }
    printf("unknown command '%s' (try help)\n", argv[0]);
}
