/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QEMU's edu device (hw/misc/edu.c, docs/specs/edu.rst) as the guest-tier tests drive it:
 * PCI ids, BAR0 registers, the DMA engine, and the PCI command bits that let it decode
 * memory and master the bus. Transfers run between the device's buffer (EDU_BUF) and an
 * IOVA under its 28-bit DMA mask.
 */
#ifndef IOD_TESTS_VM_EDU_H
#define IOD_TESTS_VM_EDU_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "iod-util.h"

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8

#define EDU_REG_ID 0x00
#define EDU_REG_LIVENESS 0x04
#define EDU_REG_DMA_SRC 0x80
#define EDU_REG_DMA_DST 0x88
#define EDU_REG_DMA_COUNT 0x90
#define EDU_REG_DMA_CMD 0x98
#define EDU_DMA_RUN 0x1
#define EDU_DMA_TO_RAM 0x2
#define EDU_ID 0x010000ed
#define EDU_BUF 0x40000
#define EDU_DMA_LIMIT (UINT64_C(1) << 28)

#define PCI_CMD_OFFSET 0x04
#define PCI_CMD_MEMORY 0x2
#define PCI_CMD_MASTER 0x4

/* Start one transfer of count bytes, from RAM to the device or (to_ram) back. */
static inline void edu_dma_start(volatile uint8_t *bar, uint64_t src, uint64_t dst, uint64_t count,
				 bool to_ram)
{
	*(volatile uint64_t *)(bar + EDU_REG_DMA_SRC) = src;
	*(volatile uint64_t *)(bar + EDU_REG_DMA_DST) = dst;
	*(volatile uint64_t *)(bar + EDU_REG_DMA_COUNT) = count;
	*(volatile uint64_t *)(bar + EDU_REG_DMA_CMD) = EDU_DMA_RUN | (to_ram ? EDU_DMA_TO_RAM : 0);
}

static inline bool edu_dma_busy(volatile uint8_t *bar)
{
	return *(volatile uint64_t *)(bar + EDU_REG_DMA_CMD) & EDU_DMA_RUN;
}

/* Wait for the transfer in flight; false if it still runs after timeout_sec seconds. */
static inline bool edu_dma_wait(volatile uint8_t *bar, unsigned timeout_sec)
{
	uint64_t deadline = iod_now_usec() + (uint64_t)timeout_sec * 1000000;

	while (edu_dma_busy(bar)) {
		if (iod_now_usec() > deadline)
			return false;
		usleep(1000);
	}
	return true;
}

#endif
