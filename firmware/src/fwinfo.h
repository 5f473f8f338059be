/* The version record Notehub reads from host firmware, `firmware::info:{…}`; notedfu reads it too
 * (version checks, the banner to expect). Kept in the image even though nothing reads it at run time. */
#ifndef FWINFO_H
#define FWINFO_H

#ifndef FW_VERSION
#error "build with -DFW_VERSION=\"X.Y.Z\" (see the Makefile)"
#endif

#define FWINFO_STR2(x) #x
#define FWINFO_STR(x) FWINFO_STR2(x)

#define FIRMWARE_INFO(product)                                                                             \
    __attribute__((used, section(".rodata.fwinfo"))) const char firmware_info[] =                           \
        "firmware::info:{\"org\":\"notedfu\",\"product\":\"" product "\",\"version\":\"" FW_VERSION        \
        "\",\"ver_major\":" FWINFO_STR(FW_MAJOR) ",\"ver_minor\":" FWINFO_STR(FW_MINOR)                    \
        ",\"ver_patch\":" FWINFO_STR(FW_PATCH) ",\"board\":\"" BOARD_NAME "\"}"

#endif
